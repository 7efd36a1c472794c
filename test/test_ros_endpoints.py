"""find_ros.ros.endpoints on a real rclpy node: a service callback that raises is answered (success false, the error
named) and logged, the node's executor keeps serving; destroy_endpoints removes subscriptions and services."""
from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")

from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from find_ros.ros.endpoints import answers_errors, destroy_endpoints  # noqa: E402


class _Part:
    def __init__(self, node):
        self._node = node
        self.calls = 0

    @answers_errors("demo")
    def _srv_boom(self, req, resp):
        self.calls += 1
        if self.calls == 1:
            raise ValueError("bad request 1")
        resp.success, resp.message = True, "fine"
        return resp


def test_service_errors_are_answered_and_endpoints_destroyed(ros):
    node = ros.node("endpoints_host")
    part = _Part(node)
    srv = node.create_service(Trigger, "boom", part._srv_boom)
    sub = node.create_subscription(String, "chatter", lambda m: None, 10)
    client = ros.node("endpoints_client").create_client(Trigger, "boom")
    r = ros.call(client, Trigger.Request())
    assert not r.success and r.message == "demo boom failed: ValueError: bad request 1"
    r = ros.call(client, Trigger.Request())  # the executor kept serving
    assert r.success and r.message == "fine"
    destroy_endpoints(node, subscriptions=[sub], services=[srv])
    assert ros.spin_until(lambda: not client.service_is_ready(), 5.0)
    assert node.count_subscribers("chatter") == 0
