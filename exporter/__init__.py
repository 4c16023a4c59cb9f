"""crankshaft-exporter: the Crankshaft Performance Monitoring System as a Prometheus exporter."""

__version__ = "0.1.0"
