# The two commands of the README. Both set up what they need first (idempotent).
.PHONY: up test setup compose-test
setup:
	scripts/setup.sh
up: setup
	.venv/bin/sparsetune up
test:
	scripts/test.sh
compose-test:
	scripts/compose_test.sh
