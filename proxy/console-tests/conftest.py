"""Fixtures of the console's browser tests: a live `defibus standalone` (on ephemeral ports,
its own data directory), the `defibus` CLI against it, and headless Chromium driven by
Selenium through Debian's chromedriver.

Environment: DEFIBUS (the binary; scripts/console-tests.sh builds it), CHROMIUM and
CHROMEDRIVER (default /usr/bin/chromium, /usr/bin/chromedriver), CONSOLE_SCREENSHOTS (a
directory: each page's screenshot is written there as console-<page>.png, 1280x800)."""

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]
DEFIBUS = os.environ.get("DEFIBUS", str(REPO / "target" / "debug" / "defibus"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 30.0


def wait_for(what, condition, timeout=WAIT):
    """Polls `condition` until it returns something true; returns that, or fails naming
    `what` (and the last value seen) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    last = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class Bus:
    """`defibus standalone` in a temporary directory, and the CLI pointed at it."""

    def __init__(self, security=False):
        self.dir = tempfile.TemporaryDirectory(prefix="console-tests-")
        work = Path(self.dir.name)
        self.env = dict(os.environ)
        args = [DEFIBUS, "standalone", "--data-dir", work / "data", "--nameserver-addr", "127.0.0.1:0",
                "--port-base", "0", "--proxy-addr", "127.0.0.1:0", "--gsl-addr", "127.0.0.1:0",
                "--sgs-addr", "127.0.0.1:0"]
        if security:
            secrets = work / "secrets"
            self.cli_raw("security", "init", "--out", secrets)
            args += ["--security", secrets]
            self.env["DEFIBUS_TOKEN_FILE"] = str(secrets / "admin.token")
            self.secrets = secrets
        self.out = open(work / "standalone.out", "w+")
        self.err = open(work / "standalone.err", "w+")
        self.proc = subprocess.Popen([str(a) for a in args], stdout=self.out, stderr=self.err, text=True)
        printed = wait_for("standalone to start", self._started)
        addresses = dict(re.findall(r"^  (\w+)\s+(\S+)", printed, re.M))
        self.proxy = addresses["proxy"]  # http://host:port
        self.env["DEFIBUS_NAMESERVER"] = addresses["nameserver"]
        self.env["DEFIBUS_GSL"] = addresses["gsl"]
        self.env["DEFIBUS_SGS"] = addresses["sgs"]
        # The broker registers with the nameserver just after it starts listening.
        wait_for("the broker to register", lambda: self.cli("admin", "topic", "list", check=False).returncode == 0)
        self.background = []

    def _started(self):
        if self.proc.poll() is not None:
            self.err.seek(0)
            raise RuntimeError(f"standalone exited: {self.err.read()[-2000:]}")
        self.out.seek(0)
        text = self.out.read()
        return text if "Stop with Ctrl-C" in text else None

    def cli_raw(self, *args, check=True, stdin=None):
        result = subprocess.run([DEFIBUS, *map(str, args)], capture_output=True, text=True,
                                input=stdin, timeout=WAIT * 4, env=getattr(self, "env", None))
        if check and result.returncode != 0:
            raise AssertionError(f"defibus {' '.join(map(str, args))} exited {result.returncode}: "
                                 f"{result.stderr}")
        return result

    def cli(self, *args, check=True, stdin=None):
        """Runs a `defibus` command against this bus; its CompletedProcess."""
        return self.cli_raw(*args, check=check, stdin=stdin)

    def start(self, *args):
        """Runs a `defibus` command in the background until the bus stops."""
        proc = subprocess.Popen([DEFIBUS, *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=self.env)
        self.background.append(proc)
        return proc

    def url(self, path):
        return f"{self.proxy}{path}"

    def stop(self):
        for proc in [*self.background, self.proc]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.out.close()
        self.err.close()
        self.dir.cleanup()


def table(text):
    """The rows of one of the CLI's tables, as dicts by column header (cells have no spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[1:] if len(line.split()) == len(header)]


@pytest.fixture(scope="session")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,800", "--hide-scrollbars", "--lang=en-GB"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The screenshots are exactly 1280x800 CSS pixels, whatever the window decorations take.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def screenshot(driver, page):
    """Writes console-<page>.png into $CONSOLE_SCREENSHOTS, when it is set."""
    directory = os.environ.get("CONSOLE_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(directory) / f"console-{page}.png"))
