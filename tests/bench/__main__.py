"""``make bench``: every benchmark in turn; paste the tables into tests/bench/RESULTS.md."""

import importlib
import platform

MODULES = [
    "tests.bench.bench_core",
    "tests.bench.bench_connections",
    "tests.bench.bench_http",
    "tests.bench.bench_daemon",
    "tests.bench.bench_scrape_cpu",
    "tests.bench.bench_slow_clients",
    "tests.bench.bench_hostile",
    "tests.bench.bench_auth_flood",
    "tests.bench.bench_history",
    "tests.bench.bench_fleet",
]

if __name__ == "__main__":
    print(f"<!-- {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()} -->\n")
    for name in MODULES:
        importlib.import_module(name).main()
