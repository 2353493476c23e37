"""The explorers work in a real browser, the way a learner uses them.

The unit tests call the explorers' callbacks directly and nbval runs every notebook, but
neither draws a widget. A broken widget extension, a widget that fails to display, or a Run
button whose click never reaches the kernel would pass them all. Each test here closes that gap
for one notebook's explorer:

1. it starts JupyterLab on a copy of ``notebooks/`` (small data, its own Jupyter settings),
2. opens the notebook in headless Chromium and runs all its cells from the Run menu,
3. moves a slider with the keyboard and presses the explorer's Run button, twice, checking
   the readout of each run (the explorer's own check) and that the picture changed.

It needs Chromium at /usr/bin/chromium. Without it the test is skipped, except in CI
(``CI=true``), where it fails: CI must never skip it silently. On failure it saves a screenshot
and quotes the page's text, so a CI log says what the learner would have seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect, sync_playwright

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and no background traffic: without internet, Chromium floods the network with retries.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# JupyterLab user settings: never fetch news or check for updates (no toast, no network).
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False}}
WIDGET_ERROR = re.compile("Error displaying widget|Failed to load model class")

SERVER_START_S = 60  # JupyterLab answers its API
STOP_S = 30  # for JupyterLab to shut its kernels down, then for any leftover process to end
PAGE_LOAD_MS = 60_000  # the notebook is open and its kernel idle
NOTEBOOK_MS = 180_000  # all cells of one notebook, small data: at most about 60 s on 2 cores
RUN_MS = 60_000  # one explorer run: about 1.5 s, plus starting worker processes
UI_MS = 15_000  # the page reacts to a key press or a new picture
PAGE_TEXT_CHARS = 3000  # how much of the page's text a failure quotes
# Talks to JupyterLab directly, whatever proxy the environment sets for the outside world.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its address, its token and its log file."""

    url: str
    token: str
    log: Path


def require_chromium() -> None:
    """Skip without Chromium, but fail in CI, which must always run this test."""
    if CHROMIUM.exists():
        return
    reason = f"the browser test needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def lab_environment(home: Path) -> dict[str, str]:
    """Our environment (MPDEMO_START_METHOD included) with small data and Jupyter's dirs in ``home``."""
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
            "IPYTHONDIR": "ipython"}
    return {**os.environ, **{name: str(home / sub) for name, sub in dirs.items()}, "MPDEMO_SIZE": "small"}


def write_lab_settings(settings_dir: Path) -> None:
    """Write :data:`LAB_SETTINGS` where JupyterLab looks for user settings."""
    for name, values in LAB_SETTINGS.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def lab_command(root: Path, port: int, token: str) -> list[str]:
    """JupyterLab from this Python, serving ``root`` on ``port`` to whoever has ``token``."""
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:  # JupyterLab refuses to run as root without it (CI containers do)
        command.append("--allow-root")
    return command


def wait_until_serving(lab: Lab, server: subprocess.Popen[bytes]) -> None:
    """Poll JupyterLab's status API until it answers; fail if the server dies or takes too long."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode}; see {lab.log}")
        try:
            with DIRECT.open(f"{lab.url}/api/status?token={lab.token}", timeout=5):
                return
        except OSError:  # not listening yet
            time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s; see {lab.log}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop JupyterLab, which shuts its kernels down on SIGTERM, then kill anything left over."""
    family = psutil.Process(server.pid).children(recursive=True) if server.poll() is None else []
    server.terminate()
    try:
        server.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    _, alive = psutil.wait_procs(family, timeout=STOP_S)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):  # it may end on its own meanwhile
            process.kill()
    psutil.wait_procs(alive, timeout=STOP_S)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab serving a copy of the notebooks, stopped with all its kernels afterwards."""
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, root)
    home = tmp_path / "jupyter"
    write_lab_settings(home / "settings")
    port, token = free_port(), secrets.token_hex(16)
    lab = Lab(f"http://127.0.0.1:{port}", token, tmp_path / "jupyterlab.log")
    with lab.log.open("w") as log:
        server = subprocess.Popen(lab_command(root, port, token), env=lab_environment(home), cwd=root,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(lab, server)
            yield lab
        finally:
            stop(server)


@pytest.fixture
def page() -> Iterator[Page]:
    """A page in headless Chromium, closed afterwards."""
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


@contextlib.contextmanager
def failure_report(page: Page, folder: Path, lab: Lab) -> Iterator[None]:
    """Turn a failure inside into one message: the error, a screenshot and what the page showed."""
    try:
        yield
    except (AssertionError, PlaywrightError) as error:
        screenshot = folder / "failure.png"
        page.screenshot(path=screenshot)
        text = page.locator("body").inner_text(timeout=UI_MS)[-PAGE_TEXT_CHARS:]
        pytest.fail(f"{error}\n\nscreenshot: {screenshot}\nJupyterLab log: {lab.log}\n"
                    f"the page's text ends with:\n{text}")


def open_notebook(page: Page, lab: Lab, notebook: str) -> None:
    """Open a notebook in JupyterLab and wait until its kernel is connected and idle."""
    assert (NOTEBOOKS / notebook).is_file(), f"{notebook} is missing from {NOTEBOOKS}"
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    # The status bar reads "No Kernel | Initializing", …, then "Python 3 (ipykernel) | Idle".
    kernel_status = page.get_by_title(f"Change kernel for {notebook}")
    expect(kernel_status).to_have_text(re.compile(r"^(?!No Kernel).* \| Idle$"), timeout=PAGE_LOAD_MS)


def run_all_cells(page: Page, explorer: Locator) -> None:
    """Run → Run All Cells, then wait until no cell is queued or running."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator("#jp-mainmenu-run").get_by_role("menuitem", name="Run All Cells", exact=True).click()
    busy = page.locator(".jp-InputPrompt", has_text="*")  # "[*]:" marks queued and running cells
    expect(busy.or_(explorer)).not_to_have_count(0, timeout=UI_MS)  # the run has started…
    expect(busy).to_have_count(0, timeout=NOTEBOOK_MS)  # …and finished


def find_explorer(page: Page, label: str) -> Locator:
    """An explorer: the box holding a slider described by ``label`` and a Run button."""
    return (page.locator(".widget-vbox")
            .filter(has=page.get_by_text(label, exact=True))
            .filter(has=page.get_by_role("button", name="Run")))


def slider(explorer: Locator, label: str) -> Locator:
    """The explorer's slider described by ``label``."""
    return explorer.locator(".widget-slider").filter(has=explorer.page.get_by_text(label, exact=True))


def slider_value(explorer: Locator, label: str) -> Locator:
    """The value a slider displays next to it."""
    return slider(explorer, label).locator(".widget-readout")


def step_right(explorer: Locator, label: str) -> None:
    """Move a slider one step to the right with the keyboard: focus its handle, press →."""
    slider(explorer, label).get_by_role("slider").press("ArrowRight")  # press() focuses it first


def source(picture: Locator) -> str:
    """An image's src: the explorer's PNG as a blob: or data: URL."""
    return picture.get_attribute("src") or ""


def press_run(explorer: Locator, answered: str) -> str:
    """Click the explorer's Run button and wait for a readout matching ``answered``; return it."""
    readout = explorer.locator(".widget-html-content")
    before = readout.text_content() or ""
    explorer.get_by_role("button", name="Run").click()
    expect(readout).not_to_have_text(before, timeout=RUN_MS)  # "running…", or already the answer
    expect(readout).to_contain_text(re.compile(f"{answered}|run failed"), timeout=RUN_MS)
    return readout.inner_text()  # as shown: a <br> becomes a line break


def drive_explorer(page: Page, lab: Lab, tmp_path: Path, *, notebook: str, slider_label: str,
                   answered: str, check: Callable[[Locator, str], None]) -> None:
    """Run all of ``notebook``, then move its explorer's ``slider_label`` slider and press Run, twice.

    ``answered`` is a pattern every finished readout contains; ``check(explorer, readout)``
    asserts what this explorer's readout must say about the settings shown on the page.
    """
    explorer = find_explorer(page, slider_label)
    picture = explorer.locator("img.widget-image")
    with failure_report(page, tmp_path, lab):
        open_notebook(page, lab, notebook)
        run_all_cells(page, explorer)
        expect(explorer).to_be_visible(timeout=UI_MS)
        expect(page.get_by_text(WIDGET_ERROR)).to_have_count(0)

        moved = slider_value(explorer, slider_label)
        before = moved.inner_text()
        step_right(explorer, slider_label)
        expect(moved).not_to_have_text(before, timeout=UI_MS)

        blank = source(picture)
        first = press_run(explorer, answered)
        check(explorer, first)
        expect(picture).not_to_have_attribute("src", blank, timeout=UI_MS)
        first_picture = source(picture)
        assert first_picture.startswith(("blob:", "data:")), first_picture

        step_right(explorer, slider_label)
        second = press_run(explorer, answered)
        check(explorer, second)
        assert second != first, "the second run left the readout as it was"
        expect(picture).not_to_have_attribute("src", first_picture, timeout=UI_MS)
        expect(page.get_by_text(WIDGET_ERROR)).to_have_count(0)


def check_chunking(explorer: Locator, readout: str) -> None:
    """The run agreed with serial and used ceil(rows / chunksize) tasks, as the sliders show."""
    assert "results equal serial: True" in readout, readout
    rows = int(slider_value(explorer, "rows").inner_text())
    chunksize = int(slider_value(explorer, "chunksize").inner_text())
    tasks = math.ceil(rows / chunksize)
    assert re.search(rf"\b{tasks} tasks\b", readout), f"expected {tasks} tasks: {readout}"


def check_queue(explorer: Locator, readout: str) -> None:
    """Every row was done, the bound is the slider's, and rows/s is the rows over the seconds shown."""
    match = re.search(r"([\d,]+) of ([\d,]+) rows done in ([\d.]+) s: ([\d,]+) rows/s · queue bound ([\w ]+?)\s*deepest",
                      readout)
    assert match, f"no queue readout: {readout}"
    done, rows, seconds, rate = (float(match.group(i).replace(",", "")) for i in range(1, 5))
    assert done == rows, readout
    bound = slider_value(explorer, "queue bound").inner_text()
    assert match.group(5).strip() == (f"{bound} chunks" if bound != "unbounded" else bound), readout
    assert rate == pytest.approx(done / seconds, rel=0.05), readout  # the seconds are rounded to 0.01


def check_shm(explorer: Locator, readout: str) -> None:
    """Both ways agreed with serial, for the size and the processes the sliders show."""
    assert "results equal serial: True" in readout, readout
    size = slider_value(explorer, "array size (MB)").inner_text()
    processes = int(slider_value(explorer, "processes").inner_text())
    assert re.search(rf"\b{size} MB to {processes} worker", readout), f"expected {size} MB, {processes}: {readout}"


@dataclass(frozen=True)
class Explorer:
    """One notebook's explorer: the slider the test moves, what every readout says, its check."""

    notebook: str
    slider: str
    answered: str
    check: Callable[[Locator, str], None]


EXPLORERS = [Explorer("02_chunking.ipynb", "chunksize", "results equal serial", check_chunking),
             Explorer("03_queues.ipynb", "queue bound", "rows/s", check_queue),
             Explorer("04_shared_memory.ipynb", "array size (MB)", "results equal serial", check_shm)]


# `page` comes first: without Chromium the test skips before it starts JupyterLab.
@pytest.mark.browser
@pytest.mark.timeout(600)
@pytest.mark.parametrize("explorer", EXPLORERS, ids=lambda explorer: explorer.notebook)
def test_explorer_in_jupyterlab(page: Page, lab: Lab, tmp_path: Path, explorer: Explorer) -> None:
    drive_explorer(page, lab, tmp_path, notebook=explorer.notebook, slider_label=explorer.slider,
                   answered=explorer.answered, check=explorer.check)
