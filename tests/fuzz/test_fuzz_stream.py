"""``stream`` on hostile sources: good and bad frames mixed, odd rates and queue sizes, things that are not
sequences of frames. Each stream ends with its results or with the first frame's EdgemedError, in bounded
time, and leaves no thread running."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from . import strategies as fs
from .harness import fuzz_settings, outcome

pytestmark = pytest.mark.fuzz

GOOD = np.full((28, 28), 90, np.uint8)
_frames = st.lists(st.one_of(st.just(GOOD), fs.arrays()), max_size=6)
_sources = st.one_of(_frames, _frames.map(iter), _frames.map(tuple),
                     st.sampled_from([None, 5, GOOD, "frames", b"", np.zeros((3, 28, 28), np.uint8)]))
_rates = st.sampled_from([None, None, 1000, 30.0, 0, -5, float("nan"), float("inf"), "30", 1e-300, True])
_sizes = st.sampled_from([2, 1, 0, -1, 64, 2.5, "2", None])


@fuzz_settings(120, deadline_s=20)
@given(source=_sources, fps=_rates, maxsize=_sizes, results=_sizes)
def test_stream(cnn_pipe, source, fps, maxsize, results):
    before = threading.active_count()

    def run():
        return [r for r in cnn_pipe.stream(source, fps=fps, maxsize=maxsize, results=results)]

    def check(delivered):
        for r in delivered:
            assert r.dropped or np.isfinite(r.probabilities).all()

    out = outcome("stream", run, check, bound_s=15)
    for r in out or []:
        if not r.dropped:
            outcome("stream (results)", lambda r=r: r.result)
    assert threading.active_count() <= before, "stream left a thread running"
