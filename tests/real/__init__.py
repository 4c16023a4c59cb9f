"""Real-component tests: real Prometheus/promtool, npm-installed type checkers and the like.

They skip when their tool is missing and fail instead under REQUIRE_REAL=1 (CI)."""
