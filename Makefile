# The two commands README names: `make run` (the daemon on built-in defaults) and `make test`.
# Both build their own virtualenv on a fresh clone; nothing needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.runtime-stamp
ARGS ?=
PYTEST_ARGS ?=

# Installation (make install): honours PREFIX, SYSCONFDIR, UNITDIR, BINDIR and DESTDIR.
PREFIX ?= /opt/crankshaft-exporter
# A link to the program here puts `crankshaft-exporter` on PATH.
BINDIR ?= /usr/local/bin
SYSCONFDIR ?= /etc/crankshaft-exporter
UNITDIR ?= /etc/systemd/system
DESTDIR ?=

# The lowest versions of the runtime dependencies (tests/floors.txt): `make test` runs the
# unit and integration tests in this second virtualenv too.
FLOORS_VENV ?= .venv-floors
FLOORS_STAMP := $(FLOORS_VENV)/.installed-stamp

# The Debian package (make deb): the packaging files live in systemd/debian/ and are laid
# out as debian/ in a build copy under build/deb/; the .deb lands in dist/.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' exporter/__init__.py)
DEB_TREE := build/deb/crankshaft-exporter-$(VERSION)
DEB := dist/crankshaft-exporter_$(VERSION)_all.deb
# The unit as the package installs it: the program on /usr/bin, its documentation there too.
DEB_UNIT_SED := -e 's|file:///opt/crankshaft-exporter/README.md|man:crankshaft-exporter(1) file:///usr/share/doc/crankshaft-exporter/README.md|' \
                -e 's|/opt/crankshaft-exporter/bin/|/usr/bin/|' \
                -e 's|Installed by `make install`|Installed by the Debian package|'

.PHONY: run test test-floors lint typecheck tools bench install uninstall clean deb

# `make run` needs only the package and its runtime dependencies; `make test` adds the
# test tools to the same virtualenv.  systemd-python (journald tests) compiles against
# libsystemd: tolerated if it cannot.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet 'systemd-python>=235' || \
	  echo "note: systemd-python did not build; journald tests will skip" >&2
	touch $@

# Only the runtime dependencies are held at their floors; the test tools are the newest.
# pip applies a constraint only to a package something requires, so pins for dependencies
# pyproject.toml does not (yet) list are inert.
$(FLOORS_STAMP): pyproject.toml tests/floors.txt
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/pip install --quiet --upgrade pip
	$(FLOORS_VENV)/bin/pip install --quiet -c tests/floors.txt -e '.[test]'
	$(FLOORS_VENV)/bin/pip install --quiet -c tests/floors.txt 'systemd-python>=235' || \
	  echo "note: systemd-python did not build; journald tests will skip" >&2
	touch $@

# Real components for the tests (Prometheus, promtool, Alertmanager, wrk, systemd-nspawn).
tools:
	.ci/install-tools

# `. .venv/bin/activate` afterwards puts crankshaft-exporter on PATH (README says so).
run: $(RUN_STAMP)
	$(BIN)/crankshaft-exporter $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check exporter tests

# mypy --strict over exporter/ (settings in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: tools lint typecheck test-floors
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The unit and integration tests with the declared lowest versions (the e2e tests run once,
# in the main virtualenv; the Debian package test installs Debian 12's own libraries).
# test_install.py is left out: `make install` fills its own virtualenv from the index.
test-floors: tools $(FLOORS_STAMP)
	$(FLOORS_VENV)/bin/python -m pytest -p no:cacheprovider tests/unit tests/integration \
	  --ignore=tests/integration/test_install.py $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: tools $(STAMP)
	$(BIN)/python -m tests.bench

# A virtualenv at PREFIX with the package and its dependencies (journald support if
# systemd-python builds), the default config (never overwriting an existing one), and the
# unit with ExecStart pointing at PREFIX.  With DESTDIR the tree is staged for packaging:
# paths inside the virtualenv are rewritten to PREFIX.
install:
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/pip install --quiet '.[systemd]' || { \
	  echo "note: installing with journald support failed (see above; systemd-python needs" \
	       "libsystemd-dev, pkg-config, gcc); installing without: logs go to stderr," \
	       "which journald still captures" >&2; \
	  $(DESTDIR)$(PREFIX)/bin/pip install --quiet . ; }
	if [ -n "$(DESTDIR)" ]; then \
	  grep -rlI -- '$(DESTDIR)$(PREFIX)' $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/pyvenv.cfg \
	    | xargs -r sed -i 's|$(DESTDIR)$(PREFIX)|$(PREFIX)|g'; fi
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/README.md
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)
	if [ -e $(DESTDIR)$(SYSCONFDIR)/exporter.yaml ]; then \
	  echo "keeping existing $(SYSCONFDIR)/exporter.yaml"; \
	else install -m 0644 config/exporter.yaml $(DESTDIR)$(SYSCONFDIR)/exporter.yaml; fi
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's|/opt/crankshaft-exporter|$(PREFIX)|g' \
	    -e 's|/etc/crankshaft-exporter|$(SYSCONFDIR)|g' \
	    systemd/crankshaft-exporter.service > $(DESTDIR)$(UNITDIR)/crankshaft-exporter.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/crankshaft-exporter.service
	install -d -m 0755 $(DESTDIR)$(BINDIR)
	if [ -e $(DESTDIR)$(BINDIR)/crankshaft-exporter ] && \
	   [ ! -L $(DESTDIR)$(BINDIR)/crankshaft-exporter ]; then \
	  echo "note: $(BINDIR)/crankshaft-exporter exists and is not our link; left alone" >&2; \
	else ln -sfn $(PREFIX)/bin/crankshaft-exporter $(DESTDIR)$(BINDIR)/crankshaft-exporter; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

uninstall:
	rm -f $(DESTDIR)$(UNITDIR)/crankshaft-exporter.service
	if [ "$$(readlink $(DESTDIR)$(BINDIR)/crankshaft-exporter)" = \
	     "$(PREFIX)/bin/crankshaft-exporter" ]; then \
	  rm -f $(DESTDIR)$(BINDIR)/crankshaft-exporter; fi
	rm -rf $(DESTDIR)$(PREFIX)
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "left $(SYSCONFDIR) in place (your configuration)"

# Debian's own tools (debhelper, dh-python); `.ci/install-tools` installs them.  PATH without
# pyenv or a virtualenv: pybuild must find Debian's python3.
deb:
	rm -rf build/deb && mkdir -p $(DEB_TREE) dist
	tar -c --exclude=__pycache__ --exclude='*.egg-info' \
	  pyproject.toml README.md LICENSE exporter config grafana | tar -x -C $(DEB_TREE)
	cp -r systemd/debian $(DEB_TREE)/debian
	sed $(DEB_UNIT_SED) systemd/crankshaft-exporter.service \
	  > $(DEB_TREE)/debian/crankshaft-exporter.service
	{ printf 'crankshaft-exporter (%s) bookworm; urgency=medium\n\n' '$(VERSION)'; \
	  printf '  * Built from the crankshaft-exporter source tree (make deb).\n\n'; \
	  printf ' -- %s  %s\n' "$$(sed -n 's/^Maintainer: //p' systemd/debian/control)" \
	    "$$(date -R -u -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s))"; \
	} > $(DEB_TREE)/debian/changelog
	cd $(DEB_TREE) && env -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	  dpkg-buildpackage -us -uc -b
	mv build/deb/crankshaft-exporter_$(VERSION)_all.deb $(DEB)
	@echo "built $(DEB)"

clean:
	rm -rf $(VENV) $(FLOORS_VENV) build dist *.egg-info .pytest_cache .hypothesis .ruff_cache
