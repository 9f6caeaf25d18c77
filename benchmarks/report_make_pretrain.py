"""What `make pretrain` printed when it was measured, from benchmarks/results/make_pretrain/ (for the README).

The folder holds `make_pretrain.log` (the output of `time make pretrain`, first line `# <how it was run>`) and
`eval_digits.json` (the evaluation it wrote). The README shows the lines a newcomer should look for: the last
progress-bar line, the run, export and evaluation summaries, and the wall time.
"""

import re
from pathlib import Path


KEPT = re.compile(
    r"^(Pre-training finished|Exported |backbone\s+protocol|pretrained\s|random_init\s|Loss and online k-NN curves)"
)
PROGRESS = re.compile(r"^pretrain \w+: ")
WALL = re.compile(r"^real\s+(?:(\d+)m)?([\d.]+)s")


def printed_lines(log: str) -> list[str]:
    """The lines of a `make pretrain` log worth showing, in order (one copy of the final progress bar)."""
    lines = log.splitlines()
    progress = [line for line in lines if PROGRESS.match(line)]
    kept, seen = [], set()
    for line in lines:
        if (progress and line == progress[-1]) or (KEPT.match(line) and line not in seen):
            kept.append(line.rstrip())
            seen.add(line)
    return kept


def wall_time(log: str) -> str | None:
    """`real` of `time make pretrain` as `7 min 4 s`, or None when the log has no timing."""
    match = next((WALL.match(line) for line in log.splitlines() if WALL.match(line)), None)
    if match is None:
        return None
    minutes, seconds = int(match.group(1) or 0), round(float(match.group(2)))
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def make_pretrain_section(directory: Path, link: str) -> str:
    """Markdown: how `make pretrain` was measured, its wall time and what it printed, or that it was not measured.

    Args:
        directory: `benchmarks/results/make_pretrain`.
        link: The same folder as seen from the README.
    """
    path = directory / "make_pretrain.log"
    if not path.is_file():
        return f"`make pretrain` has not been measured yet (its log goes to `{link}/make_pretrain.log`)."
    log = path.read_text()
    first = log.splitlines()[0] if log else ""
    how = re.sub(r"\s*\([^)]*\)$", "", first.removeprefix("#").strip()) if first.startswith("#") else ""
    how = how or "`time make pretrain`"
    wall = wall_time(log)
    curves = directory / "training_curves.png"
    lines = [
        f"Measured: {how} ([log]({link}/make_pretrain.log))" + (f": {wall}." if wall else "."),
        "What it printed (log lines and progress bars left out, except the last progress bar):",
        "",
        "```text",
        *printed_lines(log),
        "```",
    ]
    if curves.is_file():
        lines += ["", f"Its loss and online k-NN curves: [training_curves.png]({link}/training_curves.png)."]
    return "\n".join(lines)
