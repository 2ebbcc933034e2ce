"""``python -m odbench …``: the CLI, for launchers that start a module
(``accelerate launch -m odbench eval …``, ``torchrun -m odbench eval …``)."""

from odbench.cli import main

if __name__ == "__main__":
    main(prog_name="odbench")
