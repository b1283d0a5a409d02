"""Physical scene simulator: the six campaign flights in the instruments' raw layout
(docs/physics.md, 'The synthetic campaign').

The label is never painted into pixels. A ground scene (ocean temperature field, broken
boundary-layer cloud with optical depth, cloud base/top heights that drift along the track)
is built in ground coordinates; each IRAI frame is the view of that scene from the ER-2 at
20 km (parallax: elevated cloud is displaced outward from nadir by z/(H-z)); cloud shadows
fall on the sea displaced by z*tan(SZA) away from the sun and cool it slightly; a sensor
model (vignetting, column striping, gain drift, noise, linear calibration) turns brightness
temperature into uint16 counts. The CPL is a nadir lidar flying over the same scene: it
reports the base of the cloud under the aircraft (with range noise), fill when clear.

Image orientation: row 0 is forward (the aircraft heading), rows run along-track, columns
cross-track. `nav/sunAzGrd` is written as the solar azimuth clockwise from the heading, so
the scalar the model sees fixes the shadow direction in the image (a column flip maps it to
360 - SAA, as the augmentation assumes).

    out = write_campaign("data/raw", seed=0)            # six flights, local 26x32 frames
    fl = synth_flight("12Feb25", seed=0, frame_size=(26, 32))   # arrays, no I/O

The parameter tables are in synth_params, the pure building blocks (fields, optical depth,
shadows, the view from the aircraft) in synth_physics, the physical steps of one flight in
synth_scene; this module runs the steps (synth_flight), writes the files and the CLI.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloudml.data import layout
from cloudml.data import synth_scene as scene
from cloudml.data.synth_params import FLIGHT_PARAMS, LOCAL_FRAME, FlightParams
from cloudml.data.synth_physics import (
    cloud_optical_depth,
    fractal_field,
    shadow_optical_depth,
    utc_epoch,
    view_frame,
)
from cloudml.errors import ConfigError
from cloudml.fileio import check_output_dir
from cloudml.flights import FLIGHT_NAMES, get_flight

# the tables and building blocks stay reachable as synth.<name>, as the tests use them
__all__ = [
    "FLIGHT_PARAMS",
    "LOCAL_FRAME",
    "FlightParams",
    "SynthFlight",
    "add_command",
    "cloud_optical_depth",
    "fractal_field",
    "parse_frame_size",
    "shadow_optical_depth",
    "synth_flight",
    "view_frame",
    "write_campaign",
    "write_flight",
]

log = logging.getLogger(__name__)


@dataclass
class SynthFlight:
    """One flight's raw arrays (what the three files hold) plus the hidden scene truth."""

    name: str
    signal: np.ndarray  # (N, R, C) uint16 counts
    time_utc: np.ndarray  # (N,) epoch s
    sza_deg: np.ndarray  # (N,) with occasional NaN
    saa_deg: np.ndarray  # (N,) from the heading, with occasional NaN
    cpl_jday: np.ndarray  # (M, 3) decimal day of year: profile mid, start, end
    cpl_base_km: np.ndarray  # (M, 10) fill -9999, column 0 = boundary-layer cloud
    cpl_top_km: np.ndarray  # (M, 10)
    lidar_surface_m: np.ndarray  # (M,)
    dem_surface_m: np.ndarray  # (M,)
    cpl_time_utc: np.ndarray  # (M,) epoch s (truth; the file carries the julian day)
    gsd_m: tuple[float, float]
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame scene truth


# --- one flight ---------------------------------------------------------------------------------
def synth_flight(
    name: str,
    seed: int = 0,
    frame_size: tuple[int, int] = LOCAL_FRAME,
    params: FlightParams | None = None,
) -> SynthFlight:
    """Simulate one flight; same (name, seed, frame_size) -> identical arrays.

    The ground scene is a set of float32 (G, W) layers, G ~ leg length / GSD plus shadow
    margins, and frames are rendered one at a time into the uint16 output: at full size the
    30Oct24 leg peaks at ~1.3 GB, of which 0.8 GB is the (N, 512, 640) uint16 signal itself.
    """
    flight = get_flight(name)
    p = params or FLIGHT_PARAMS[name]
    rows, cols = frame_size
    if rows < 8 or cols < 8:
        raise ConfigError(f"frame_size: need at least 8x8 pixels, got {rows}x{cols}")
    rng = np.random.default_rng([seed, FLIGHT_NAMES.index(name)])
    t0 = utc_epoch(flight.date, p.start_utc)

    # the steps in the order of their random draws: same seed -> bit-identical arrays
    frame_t = scene.frame_times(rng, p, t0)  # (N,) time line: slots, dropouts, turns
    grid = scene.GroundGrid.build(frame_size, t0, p.n_slots)
    track = scene.track_series(rng, p, grid)  # (G,) base, top, cloud fraction, sun
    land, dem_g = scene.land_profile(p, grid)
    tau = scene.cloud_tau(rng, p, grid, track)  # (G, W) cloud optical depth
    surface = scene.surface_temperature(rng, p, grid, track, tau, land)  # (1, G, W) K
    layers = scene.cloud_layers(rng, p, grid, track, tau)  # (2, G, W)
    fr_nadir = grid.nadir_row(frame_t)  # (N,) ground row under the aircraft
    fr_top = np.interp(fr_nadir, grid.idx, track.top_km)  # (N,) km at nadir
    signal = scene.render_frames(rng, p, grid, surface, layers, fr_nadir, fr_top)
    del surface, layers
    sza = np.interp(fr_nadir, grid.idx, track.sza_deg)
    saa = scene.solar_azimuth(frame_t, t0, p)
    sza_out, saa_out = scene.navigation(rng, sza, saa)
    cpl = scene.lidar_profiles(rng, p, grid, track, tau, dem_g, int(flight.date[:4]))

    truth = {
        "base_km": np.interp(fr_nadir, grid.idx, track.base_km),  # (N,) at nadir
        "top_km": fr_top,
        "sza_deg": sza,
        "saa_deg": saa,
        "cloud_frac": np.interp(fr_nadir, grid.idx, track.cloud_frac),
        "cpl_base_true_km": cpl.base_true_km,  # (M,)
    }
    return SynthFlight(
        name,
        signal,
        frame_t,
        sza_out,
        saa_out,
        cpl.jday,
        cpl.base_km,
        cpl.top_km,
        cpl.lidar_surface_m,
        cpl.dem_surface_m,
        cpl.time_utc,
        grid.gsd,
        truth,
    )


# --- I/O -------------------------------------------------------------------------------------------
def write_flight(
    out_dir: str | Path, name: str, seed: int = 0, frame_size: tuple[int, int] = LOCAL_FRAME
) -> dict:
    """Simulate and write out_dir/<flight>/<three raw files>, atomically as one directory."""
    t_start = time.perf_counter()
    fl = synth_flight(name, seed, frame_size)
    flight = get_flight(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir))
    try:
        layout.write_irai(tmp / flight.irai_file, fl.signal, fl.time_utc)
        layout.write_cpl(
            tmp / flight.cpl_file,
            fl.cpl_jday,
            fl.cpl_base_km,
            fl.lidar_surface_m,
            fl.dem_surface_m,
            layer_top_km=fl.cpl_top_km,
        )
        layout.write_nav(tmp / flight.nav_file, fl.sza_deg, fl.saa_deg)
        if dest.exists():  # replace a previous flight only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=out_dir))
            os.replace(dest, old / name)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    cbh = fl.cpl_base_km[:, 0]
    summary = {
        "flight": name,
        "dir": str(dest),
        "frames": int(fl.signal.shape[0]),
        "frame_size": [int(fl.signal.shape[1]), int(fl.signal.shape[2])],
        "gsd_m": [round(g, 2) for g in fl.gsd_m],
        "profiles": int(len(cbh)),
        "cloudy_profiles": int((cbh != layout.CPL_FILL).sum()),
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    log.info(
        "synth %s: %d frames %dx%d, %d CPL profiles (%d cloudy) in %.1f s -> %s",
        name,
        summary["frames"],
        *summary["frame_size"],
        summary["profiles"],
        summary["cloudy_profiles"],
        summary["seconds"],
        dest,
    )
    return summary


def write_campaign(
    out_dir: str | Path,
    seed: int = 0,
    frame_size: tuple[int, int] = LOCAL_FRAME,
    flights: tuple[str, ...] | list[str] = FLIGHT_NAMES,
) -> dict:
    """Write every flight in `flights` under out_dir; {flight: summary}."""
    for name in flights:
        get_flight(name)  # fail on a typo before writing anything
    return {name: write_flight(out_dir, name, seed, frame_size) for name in flights}


def parse_frame_size(text: str) -> tuple[int, int]:
    """'local' -> (26, 32), 'full' -> (512, 640), '64x80' -> (64, 80)."""
    t = text.strip().lower()
    if t == "local":
        return LOCAL_FRAME
    if t == "full":
        return (layout.FULL_ROWS, layout.FULL_COLS)
    r, sep, c = t.partition("x")
    if not sep or not r.isdigit() or not c.isdigit() or int(r) < 8 or int(c) < 8:
        raise ConfigError(
            f"--frame-size: expected ROWSxCOLS (each >= 8), 'local' or 'full', got {text!r}"
        )
    return int(r), int(c)


def _run(args: argparse.Namespace) -> int:
    if args.seed < 0:  # NumPy seeds are non-negative; found as a traceback from outside
        raise ConfigError(f"--seed: must be >= 0, got {args.seed}")
    check_output_dir(args.out)
    flights = [f.strip() for f in args.flights.split(",") if f.strip()]
    if not flights:
        raise ConfigError(f"--flights: no flight named in {args.flights!r}")
    write_campaign(args.out, args.seed, parse_frame_size(args.frame_size), flights)
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic six-flight campaign in the raw layout")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (one folder per flight, each replaced atomically)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0,
                   help="campaign seed, >= 0 (default 0); the same seed simulates the same campaign")  # fmt: skip
    p.add_argument("--frame-size", default="local", help="ROWSxCOLS, 'local' (26x32) or 'full'")
    p.add_argument("--flights", default=",".join(FLIGHT_NAMES),
                   help="comma-separated subset (default all six)")  # fmt: skip
    p.set_defaults(func=_run)
