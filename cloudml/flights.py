"""The six flights of the campaign and their raw file names.

Their files and datasets: docs/physics.md, 'Raw flight files'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cloudml.errors import ConfigError, DataError


@dataclass(frozen=True)
class Flight:
    name: str  # e.g. "30Oct24"
    campaign: str  # "WHYMSIE2024" or "GLOVE2025"
    date: str  # YYYYMMDD
    cpl_id: str  # CPL granule number in the L2 file name

    @property
    def irai_file(self) -> str:
        return f"{self.campaign}_IRAI_L1B_Rev-_{self.date}.h5"

    @property
    def cpl_file(self) -> str:
        return f"CPL_L2_V1-02_01kmLay_{self.cpl_id}_{self.name.lower()}.hdf5"

    @property
    def nav_file(self) -> str:
        return f"CRS_{self.date}_nav.hdf"

    @property
    def files(self) -> tuple[str, str, str]:
        """(IRAI image file, CPL layer file, nav file) names."""
        return (self.irai_file, self.cpl_file, self.nav_file)


FLIGHTS: dict[str, Flight] = {
    f.name: f
    for f in (
        Flight("10Feb25", "GLOVE2025", "20250210", "259015"),
        Flight("30Oct24", "WHYMSIE2024", "20241030", "259006"),
        Flight("04Nov24", "WHYMSIE2024", "20241104", "259008"),
        Flight("23Oct24", "WHYMSIE2024", "20241023", "259004"),
        Flight("18Feb25", "GLOVE2025", "20250218", "259017"),
        Flight("12Feb25", "GLOVE2025", "20250212", "259016"),
    )
}
FLIGHT_NAMES: tuple[str, ...] = tuple(FLIGHTS)


def get_flight(name: str) -> Flight:
    """The flight called `name`; a clear error listing the known ones otherwise."""
    try:
        return FLIGHTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown flight {name!r}; known flights: {', '.join(FLIGHT_NAMES)}"
        ) from None


def flight_paths(raw_dir: str | Path, name: str) -> tuple[Path, Path, Path]:
    """Paths of a flight's (IRAI, CPL, nav) files under `raw_dir/<flight>/`."""
    flight = get_flight(name)
    base = Path(raw_dir) / flight.name
    return tuple(base / f for f in flight.files)  # type: ignore[return-value]


_CPL_YEAR = re.compile(r"_\d{2}[a-z]{3}(\d{2})$", re.IGNORECASE)


def year_from_cpl_filename(path: str | Path) -> int:
    """Four-digit year from a CPL L2 file name: `..._30oct24.hdf5` -> 2024.

    Only the file name is read (never the directory: a '.' in a folder name must not
    matter), and the two digits must follow a ddMMM date just before the extension.
    """
    stem = Path(path).name.split(".", 1)[0]
    m = _CPL_YEAR.search(stem)
    if not m:
        raise DataError(
            f"{path}: cannot read the year from the CPL file name "
            "(expected it to end in _<dd><mon><yy>, e.g. _30oct24.hdf5)"
        )
    return 2000 + int(m.group(1))
