"""Node reports: round trip, and anything else in a framework message is not one."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from toil_mesos.node_report import MAX_STAGED_BUNDLES, NodeReport, measure_node


def test_round_trip_and_measurement():
    report = measure_node("h", workers=2)
    assert report.cores >= 1 and report.memory > 0 and report.workers == 2
    assert NodeReport.decode(report.encode()) == report


@pytest.mark.parametrize("data", ["%%%", base64.b64encode(b"hello").decode(),
                                  base64.b64encode(b'{"format": "other"}').decode(),
                                  base64.b64encode(b'{"format": "toil-mesos-node", '
                                                   b'"version": 1}').decode()])
def test_other_messages_are_not_reports(data):
    assert NodeReport.decode(data) is None


def test_the_appliance_is_optional_both_ways():
    report = measure_node("h", workers=0, appliance="toil-mesos:dev")
    assert NodeReport.decode(report.encode()) == report
    document = json.loads(base64.b64decode(report.encode()))
    del document["appliance"]  # a report from an executor that predates the field
    older = NodeReport.decode(base64.b64encode(json.dumps(document).encode()).decode())
    assert older is not None and older.appliance is None and older.hostname == "h"


def test_staged_bundles_travel_and_are_optional():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3)]
    report = measure_node("h", workers=1, staged_bundles=reversed(hashes))
    assert report.staged_bundles == tuple(sorted(hashes))
    assert NodeReport.decode(report.encode()) == report
    document = json.loads(base64.b64decode(report.encode()))
    del document["staged_bundles"]  # a report from an executor that predates the field
    older = NodeReport.decode(base64.b64encode(json.dumps(document).encode()).decode())
    assert older is not None and older.staged_bundles == () and older.workers == 1
    assert getattr(older, "staged_bundles", None) == ()


def test_staged_bundles_keep_only_hashes_and_are_capped():
    document = json.loads(base64.b64decode(measure_node("h", workers=0).encode()))
    good = hashlib.sha256(b"x").hexdigest()
    document["staged_bundles"] = [good, "../etc", good.upper(), 7, None, good]
    decoded = NodeReport.decode(base64.b64encode(json.dumps(document).encode()).decode())
    assert decoded is not None and decoded.staged_bundles == (good,)
    document["staged_bundles"] = "not a list"
    decoded = NodeReport.decode(base64.b64encode(json.dumps(document).encode()).decode())
    assert decoded is not None and decoded.staged_bundles == ()
    many = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(MAX_STAGED_BUNDLES + 50)]
    assert len(measure_node("h", workers=0, staged_bundles=many).staged_bundles) == (
        MAX_STAGED_BUNDLES)
