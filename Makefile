# Two commands do all the set-up: `make demo` and `make test` each bootstrap .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision pinned to the releases that lie on disk on our machines (no big download)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint clean data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/nas-aug run recipes/digits_spos.yaml --overwrite

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

# Fashion-MNIST from Debian's package (read by nas_aug.data.FashionMNISTDataModule)
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
		echo "Fashion-MNIST is installed in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "apt-get is not available: install Debian's dataset-fashion-mnist package some other way,"; \
		echo "or pass download=True (and a writable root) to FashionMNISTDataModule to download"; \
		echo "Fashion-MNIST with torchvision (needs internet)."; \
	fi

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
