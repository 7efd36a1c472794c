"""Thin rclpy adapters: nodes, message <-> numpy conversions, QoS, parameters. The only place rclpy lives."""
