"""The synthesis stage of DiffusionSeg (Ma et al. 2023, Sec. 3.2, 4.3): prompts -> Stable
Diffusion images -> AttentionCut masks -> a filtered synthetic dataset, resumable and sharded.

* :mod:`odbench.synthesis.prompts` — the prompt bank (ImageNet coarse classes x composable
  templates) and ``--prompts FILE`` (JSONL) with the class words whose tokens drive A_c;
* :mod:`odbench.synthesis.store` — the output folder: one atomic record per sample (the unit of
  resume, shard and merge), ``manifest.jsonl`` and the ``synthetic`` loader's ``manifest.json``;
* :mod:`odbench.synthesis.pipeline` — generation with guidance and capture, CLIP and mask filters,
  AttentionCut on CPU worker threads fed by a queue, progress and the run summary.

Choices the paper leaves open are in the ``[synthesis]`` table of ``datasets/synthetic.toml``.
"""
