"""Node reports: round trip, and anything else in a framework message is not one."""

from __future__ import annotations

import base64
import json

import pytest

from toil_mesos.node_report import NodeReport, measure_node


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
