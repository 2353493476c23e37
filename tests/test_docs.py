"""The instructor's guide adds up: every timetable's rows sum to its stated total, every notebook has notes.

A timetable is a markdown table whose header is ``| <name> (<H> h <MM>) | min |``; its rows are
``| <what> | <minutes> |``. The per-notebook minutes of the guide's estimate table must be the
ones the README's outline gives.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "instructors.md").read_text()
README = (ROOT / "README.md").read_text()
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
HEADER = re.compile(r"^\| (?P<name>[^|]+?) \((?P<hours>\d+) h (?P<minutes>\d\d)\) \| min \|$")


def timetables(text: str) -> dict[str, tuple[int, list[int]]]:
    """``{name: (stated total in minutes, [row minutes])}`` for every timetable in ``text``."""
    found, current = {}, None
    for line in text.splitlines():
        header = HEADER.match(line)
        if header:
            current = header["name"]
            found[current] = (int(header["hours"]) * 60 + int(header["minutes"]), [])
        elif current and re.match(r"^\|[-| ]+\|$", line):
            continue
        elif current and line.startswith("|"):
            found[current][1].append(int(line.rstrip("|").rsplit("|", 1)[1]))
        else:
            current = None
    return found


def test_every_timetable_adds_up_to_its_total():
    tables = timetables(GUIDE)
    assert len(tables) >= 3
    for name, (total, rows) in tables.items():
        assert sum(rows) == total, f"{name}: the rows add up to {sum(rows)} minutes, the header says {total}"


def test_a_timetable_that_does_not_add_up_is_caught():
    broken = "| a day (1 h 00) | min |\n|---|---|\n| 00 start here | 35 |\n| break | 15 |\n"
    (total, rows), = timetables(broken).values()
    assert sum(rows) != total


def test_every_notebook_has_a_section_in_the_guide():
    for stem in NOTEBOOKS:
        number = stem[:2]
        assert re.search(rf"^### {number} ", GUIDE, re.MULTILINE), f"no notes for notebook {stem}"


def test_the_guide_and_the_readme_give_each_notebook_the_same_minutes():
    guide = dict(re.findall(r"^\| (\d\d) [^|]+\|(?: \d+ \|){3} (\d+) \|$", GUIDE, re.MULTILINE))
    readme = dict(re.findall(r"^\| `(\d\d)_\w+\.ipynb` \|[^|]+\| (\d+) \|$", README, re.MULTILINE))
    assert set(guide) == set(readme) == {stem[:2] for stem in NOTEBOOKS}
    assert guide == readme


def test_each_notebook_states_the_minutes_the_readme_gives_it():
    readme = dict(re.findall(r"^\| `(\d\d)_\w+\.ipynb` \|[^|]+\| (\d+) \|$", README, re.MULTILINE))
    for stem in NOTEBOOKS:
        text = (ROOT / "notebooks" / f"{stem}.ipynb").read_text()
        stated = re.findall(r"\*\*Time:\*\* about (\d+) minutes", text)
        assert stated == [readme[stem[:2]]], f"{stem} says {stated} minutes, the README {readme[stem[:2]]}"
