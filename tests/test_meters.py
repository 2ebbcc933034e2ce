"""The meters' one interface (odbench.metrics.meter), tested for every meter the catalog names
and the family meter: merge = adding every record to one meter (up to the order of float sums), and every state a
record changes is declared (so merge cannot forget one)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from odbench.metrics.boxes import CorLocMeter
from odbench.metrics.catalog import METERS
from odbench.metrics.discovery import DiscoveryMeter
from odbench.metrics.instances import Instances
from odbench.metrics.meter import Meter
from odbench.registry import import_target
from odbench.scoring.meters import make_meter


def _maps(n: int = 7):
    rng = np.random.default_rng(5)
    for i in range(n):
        pred = rng.integers(0, 256, (24, 32), dtype=np.uint8)
        gt = (rng.random((24, 32)) < 0.3).astype(np.uint8) * 255
        yield pred, gt, f"img{i}"


def _boxes(n: int = 7):
    rng = np.random.default_rng(6)
    for i in range(n):
        x, y = rng.uniform(0, 20, 2)
        pred = None if i == 3 else [x, y, x + rng.uniform(5, 15), y + rng.uniform(5, 15)]
        yield pred, [[5.0, 5.0, 18.0, 16.0]], f"img{i}"


def _meters():
    """(a fresh meter factory, its score inputs) for every meter class."""
    out = []
    for name, target in sorted(METERS.items()):
        module, _, attr = target.rpartition(".")
        cls = import_target(f"{module}:{attr}")
        out.append(pytest.param(cls, id=name))
    out.append(pytest.param(type(make_meter("pysodmetrics", "all")), id="family"))
    return out


def _instances(n: int = 7):
    from odbench.bench.discovery import generate
    from odbench.data.instances import instances_from_coco
    from odbench.scoring.detections import read_results

    gt, results = generate(n, (0, 12), seed=7, crowd_rate=0.2)
    gts, _, cats = instances_from_coco(gt)
    dets, _ = read_results(results, gts, cats, "segm")
    for i, g in gts.items():
        yield g, dets.get(i, Instances(np.zeros(0), np.zeros((0, 4)), [])), i


def _inputs(cls):
    return _boxes() if cls is CorLocMeter else _instances() if cls is DiscoveryMeter else _maps()


def _new(cls) -> Meter:
    return cls() if cls in (CorLocMeter, DiscoveryMeter) else cls("pysodmetrics")


def _record(meter, inputs):
    if isinstance(meter, CorLocMeter):
        return meter.score(*inputs)
    if type(meter).__name__ == "SodMeter":
        from odbench.metrics.sod import score_image_all

        return score_image_all(inputs[0], inputs[1], meter.protocol, inputs[2])[1]
    return meter.score(*inputs)


def _state(meter) -> str:
    return json.dumps(
        vars(meter),
        default=lambda v: (
            v.tolist()
            if isinstance(v, np.ndarray)
            else _state(v)
            if isinstance(v, Meter)
            else repr(v)
        ),
        sort_keys=True,
    )


@pytest.mark.parametrize("cls", _meters())
def test_merge_equals_one_meter_and_every_state_is_declared(cls):
    inputs = list(_inputs(cls))
    one, a, b = _new(cls), _new(cls), _new(cls)
    assert isinstance(one, Meter) and one.states
    for k, x in enumerate(inputs):
        record = _record(one, x)
        one.add(record)
        (a if k < 3 else b).add(record)
    merged = a.merge(b)
    assert merged is a
    got, want = merged.compute(), one.compute()
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, str | None):
            assert got[key] == value, key
        elif isinstance(value, dict):  # the curves
            for name, curve in value.items():
                assert got[key][name] == pytest.approx(curve, rel=1e-12, abs=1e-15), name
        else:
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15, nan_ok=True), key
    # a record changes only declared states: clearing them gives a fresh meter back
    fresh = _new(cls)
    cleared = copy.deepcopy(one)
    for name in one.states:
        setattr(cleared, name, copy.deepcopy(getattr(fresh, name)))
    assert _state(cleared) == _state(fresh)


def test_merge_refuses_another_class_or_protocol():
    sal = make_meter("odbench", "basic")
    with pytest.raises(TypeError, match="cannot merge"):
        sal.merge(CorLocMeter())
    with pytest.raises(ValueError, match="protocols 'odbench' and 'selfmask'"):
        sal.merge(make_meter("selfmask", "basic"))
    with pytest.raises(ValueError, match="protocols"):
        make_meter("odbench", "all").merge(make_meter("tokencut", "all"))
