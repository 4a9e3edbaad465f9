"""`musicface` console script: one sub-command per module, each module parses its own arguments.

    musicface train     --shards dataset/shards --basis dataset/exp_basis.npz --config-json CFG \
                        --out runs/demo [--resume]
    musicface evaluate  --checkpoint runs/demo/model.pt --shards dataset/shards --out runs/demo/eval
    musicface generate  SONG --checkpoint runs/demo/model.pt --subject singer1 --out out/
    musicface inspect   dataset/shards
    musicface ablation-table --out table.md runs/*/eval/metrics.json
    musicface render-data / render-train / render   (the renderer's DAG steps)
"""
from __future__ import annotations

import importlib
import sys

# sub-command -> module whose main(argv) implements it
COMMANDS = {
    "train": ("musicface.train", "train a model on HDF5 shards"),
    "evaluate": ("musicface.evaluate",
                 "evaluate a checkpoint on the test split (metrics, table, figures)"),
    "generate": ("musicface.generate",
                 "song audio -> expression, head pose and eye parameters + preview"),
    "inspect": ("musicface.data", "summarise a shard set"),
    "ablation-table": ("musicface.evaluate",
                       "gather the variants' metrics into the ablation table"),
    "render-data": ("musicface.render_data",
                    "one take -> the renderer's training data (crop frames + conditions)"),
    "render-train": ("musicface.render_train", "train one subject's renderer"),
    "render": ("musicface.render", "render a test take (reconstruction + generated) and score it"),
}


def usage() -> str:
    lines = ["usage: musicface <command> [options]", "", "commands:"]
    lines += [f"  {name:<15} {doc}" for name, (_, doc) in COMMANDS.items()]
    lines += ["", "musicface <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"musicface: unknown command '{cmd}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[cmd][0])
    entry = getattr(module, "main_" + cmd.replace("-", "_"), None) or module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
