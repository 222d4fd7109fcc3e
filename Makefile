# The few commands people type. Each goes through dev.py, which sets up .venv itself.
.PHONY: demo test test-quick bench lint

demo:
	python3 dev.py demo

test:
	python3 dev.py test

test-quick:
	python3 dev.py test --quick

bench:
	python3 dev.py bench

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports
