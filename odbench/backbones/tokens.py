"""The CLIP tokenizer of SD-1.x and the prompt / class-token positions of Sec. 3.3.1: token
indices are positions in the 77-token sequence including the BOS token at position 0."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from odbench.backbones.sd_configs import MAX_TOKENS, PROMPT_TEMPLATE


def find_token_indices(tokenizer: Any, prompt: str, phrase: str) -> list[int]:
    """Positions of all sub-tokens of ``phrase`` in the tokenised ``prompt``, BOS included at 0.

    CLIP's BPE splits words independently, so the phrase tokenises the same inside the prompt.
    The last occurrence is used (the class name ends the prompt "a photo of a {class}")."""
    p = tokenizer(prompt, truncation=True, max_length=MAX_TOKENS).input_ids
    q = tokenizer(phrase, add_special_tokens=False).input_ids
    if not q:
        raise ValueError(f"phrase {phrase!r} has no tokens")
    for start in range(len(p) - len(q), -1, -1):
        if p[start : start + len(q)] == q:
            return list(range(start, start + len(q)))
    raise ValueError(f"phrase {phrase!r} not found in the tokenised prompt {prompt!r}")


def class_prompt(
    tokenizer: Any, cls: str, template: str = PROMPT_TEMPLATE
) -> tuple[str, list[int]]:
    """``template`` filled with ``cls`` and the positions of its sub-tokens (BOS at 0); the
    empty class gives the empty prompt and no indices."""
    if not cls:
        return "", []
    prompt = template.format(cls)
    return prompt, find_token_indices(tokenizer, prompt, cls)


@lru_cache(maxsize=1)
def clip_tokenizer() -> Any:
    """The CLIP BPE tokenizer of SD-1.x / OpenAI CLIP, built offline from open_clip's vocabulary.

    Same 49,408-token vocabulary and merges as ``openai/clip-vit-large-patch14`` (which SD-1.4
    ships), so class names tokenise exactly as in the real model."""
    import gzip

    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={v: i for i, v in enumerate(vocab)}, merges=merges, model_max_length=MAX_TOKENS
    )
