"""Replace some methods' rows of a recorded comparison by a re-run of only those methods.

`shortcut compare --objectives A B --out runs/rerun-DATA` trains and scores just A and B with the
same defaults; this merges their rows into benchmarks/results/compare_DATA.{json,md,png} (rows in
the recorded order, new methods appended), so a fix that touches one method does not need the
whole table re-trained. compare_all.sh calls it when OBJECTIVES is set.

    python benchmarks/merge_compare.py checkerboard runs/rerun-checkerboard
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shortcut_models.plots import metric_vs_steps
from shortcut_models.report import markdown_table, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def table_rows(md: str) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(lines before the table, headers, {objective: cells}) of a compare.md."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    split = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[start:]]
    split = [cells for cells in split if cells and not set(cells[0]) <= {"-"}]
    return lines[:start], split[0], {cells[0]: cells for cells in split[1:]}


def merge(data: str, rerun: Path) -> None:
    preamble, headers, rows = table_rows((RESULTS / f"compare_{data}.md").read_text())
    _, new_headers, new_rows = table_rows((rerun / "compare.md").read_text())
    if new_headers != headers:
        raise SystemExit(f"the re-run's columns {new_headers} differ from the recorded {headers}")
    rows.update(new_rows)
    scores = json.loads((RESULTS / f"compare_{data}.json").read_text())
    scores.update(json.loads((rerun / "compare.json").read_text()))
    body = markdown_table(headers, list(rows.values()))
    (RESULTS / f"compare_{data}.md").write_text("\n".join(preamble) + "\n" + body + "\n")
    write_json(RESULTS / f"compare_{data}.json", scores)
    label = preamble[0].removeprefix("# ").split(" by number")[0]
    curves = {name: {int(n): v for n, v in values.items()} for name, values in scores.items()}
    metric_vs_steps(curves, label, RESULTS / f"compare_{data}.png", f"{data}: {label} vs steps")
    print(f"merged {', '.join(new_rows)} into {RESULTS}/compare_{data}.*")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data")
    p.add_argument("rerun", type=Path, help="the re-run's --out (with compare.md, compare.json)")
    args = p.parse_args()
    merge(args.data, args.rerun)


if __name__ == "__main__":
    main()
