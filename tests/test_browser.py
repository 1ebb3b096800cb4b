"""Notebook 06's explorer in a real browser: JupyterLab on localhost, headless Chromium driven by Selenium
(Debian's `chromium` and `chromium-driver`, which `make test` installs when they are missing), the notebook
prepared by papermill (profile="ci", interactive=True) and run with the Run menu's "Run All Cells"; the
explorer's query <select> and its PNG must render, and choosing another query must redraw the PNG.

The harness tests run the same mechanics on a small stand-in notebook written to tmp_path (no training), so
a failure there points at the browser, the server or the harness rather than at notebook 06."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import nbformat
import papermill
import psutil
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

pytestmark = pytest.mark.slow

NOTEBOOK = "06_compare.ipynb"  # the notebook whose explorer the browser test drives
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parent.parent
SERVER_TIMEOUT = 90  # s: JupyterLab answers its REST API
KERNEL_TIMEOUT = 120  # s: the page is loaded and the notebook's kernel idle
EXPLORER_TIMEOUT = 600  # s: Run All Cells until the explorer renders (papermill's timeout in test_notebooks)
REDRAW_TIMEOUT = 60  # s: another query until the PNG changes
QUIET = 5  # s: no cell running and the kernel idle this long, with no explorer: the run is over

# The explorer, found from its query dropdown: the nearest widget box holding both it and an image.
QUERY_XPATH = ("//div[contains(concat(' ', normalize-space(@class), ' '), ' widget-dropdown ')]"
               "[label[normalize-space()='query']]")
EXPLORER_XPATH = (QUERY_XPATH + "/ancestor::div[contains(concat(' ', normalize-space(@class), ' '), "
                  "' widget-box ')][.//img[contains(concat(' ', normalize-space(@class), ' '), "
                  "' widget-image ')]][1]")
# ipywidgets 8 renders an Image as <img class="widget-image"> (older versions nest the <img>).
IMAGE_CSS = "img.widget-image, .widget-image img"
RUN_ALL = "runmenu:run-all"  # the Run menu's "Run All Cells"
PANEL_CSS = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook tab on show
STDERR_CSS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'

# The PNG behind an <img> (a blob: or data: URL), read in the page: the SHA-256 of its bytes and of its src,
# its first bytes and size, and the src's start for messages.
PNG_DIGEST_JS = """
const [img, done] = arguments;
const src = img.src;
const hex = b => Array.from(new Uint8Array(b)).map(x => x.toString(16).padStart(2, '0')).join('');
const sha = async data => hex(await crypto.subtle.digest('SHA-256', data));
fetch(src).then(r => r.arrayBuffer()).then(async buf => done({
  src: src.slice(0, 80), src_digest: await sha(new TextEncoder().encode(src)), digest: await sha(buf),
  head: hex(buf.slice(0, 8)), size: buf.byteLength,
})).catch(err => done({src: src.slice(0, 80), error: String(err)}));
"""
PNG_SIGNATURE = "89504e470d0a1a0a"


class ExplorerError(AssertionError):
    """A browser check failed; the message carries the page's error text and where the screenshot is."""


# --------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(settings: Path) -> None:
    """User settings of the test's JupyterLab: every cell attached to the DOM (no windowing), no news."""
    for plugin, values in {
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class LabServer:
    """`jupyter lab` on 127.0.0.1 serving `root`, its Jupyter and IPython state kept under `state`."""

    def __init__(self, root: Path, state: Path):
        self.root, self.state = root, state
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = state / "jupyter-lab.log"
        self.proc: subprocess.Popen | None = None
        self.started_in: float | None = None

    def env(self) -> dict[str, str]:
        dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
                "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
                "IPYTHONDIR": "ipython"}
        env = {**os.environ, **{k: str(self.state / v) for k, v in dirs.items()}}
        for key in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "REIDLIB_BATCH"):
            env.pop(key, None)
        # The kernel imports this checkout's reidlib (the venv's python, its cwd the notebook's folder).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return env

    def start(self) -> None:
        env = self.env()
        for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        write_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--ServerApp.open_browser=False",
               "--ServerApp.allow_root=True", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with code {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() - t0 > SERVER_TIMEOUT:
                raise AssertionError(f"jupyter lab did not answer within {SERVER_TIMEOUT} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.25)
        self.started_in = time.monotonic() - t0

    def api(self, method: str, path: str):
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def kernel_states(self) -> list[str]:
        try:
            return [s["kernel"]["execution_state"] for s in self.api("GET", "/api/sessions")]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Shut the kernels down through the API, stop the server, then kill whatever of its process tree
        is left (kernels run in sessions of their own, so the server's process group does not hold them)."""
        if self.proc is None:
            return
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        if self.proc.poll() is None:
            try:
                for kernel in self.api("GET", "/api/kernels"):
                    self.api("DELETE", f"/api/kernels/{kernel['id']}")
            except (OSError, ValueError, KeyError, TypeError):
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for child in tree:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(tree, timeout=10)


# -------------------------------------------------------------------------------------------- browser


def start_chromium(log_dir: Path) -> webdriver.Chrome:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: `make test` installs Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--no-first-run", "--disable-extensions", f"--user-data-dir={log_dir / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(log_dir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(30)
    return driver


class Lab:
    """One JupyterLab server and one headless Chromium on it; `out` collects screenshots and logs."""

    def __init__(self, server: LabServer, driver: webdriver.Chrome, out: Path):
        self.server, self.driver, self.out = server, driver, out
        self.timings: dict[str, float] = {"server start": server.started_in or 0.0}

    # -- notebooks

    def prepare(self, notebook: Path, **parameters) -> str:
        """papermill --prepare-only: `notebook` with `parameters` injected, copied into the server's root."""
        target = self.server.root / notebook.name
        papermill.execute_notebook(str(notebook), str(target), parameters=parameters, prepare_only=True,
                                   progress_bar=False)
        # No outputs or widget state saved with the notebook may pass for this run's explorer.
        nb = nbformat.read(target, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, target)
        return target.name

    def open(self, name: str) -> None:
        t0 = time.monotonic()
        self.driver.get(f"{self.server.base}/lab/tree/{quote(name)}?token={self.server.token}")
        self.poll(lambda: self.panel() is not None and self.frontend_kernel_idle(), KERNEL_TIMEOUT,
                  f"{name}: the notebook did not open with an idle kernel within {KERNEL_TIMEOUT} s")
        self.timings["open notebook"] = time.monotonic() - t0

    def panel(self) -> WebElement | None:
        panels = self.driver.find_elements(By.CSS_SELECTOR, PANEL_CSS)
        if panels and panels[0].find_elements(By.CSS_SELECTOR, ".jp-Cell"):
            return panels[0]
        return None

    def frontend_kernel_idle(self) -> bool:
        """The notebook toolbar's kernel indicator says idle (the page's own view of the kernel), and so
        does the server."""
        indicator = self.driver.find_elements(By.CSS_SELECTOR, f"{PANEL_CSS} .jp-Notebook-ExecutionIndicator")
        if not indicator or indicator[0].get_attribute("data-status") != "idle":
            return False
        return self.server.kernel_states() == ["idle"]

    def run_all_cells(self) -> None:
        """Run > Run All Cells, clicked as a person does. The item is found by its command id
        (`runmenu:run-all`, which the menu hands to the notebook on show), not by its label; it needs no
        cell or keyboard focus, unlike a shortcut, and no typing, unlike the command palette."""
        menus = self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar .lm-MenuBar-item")
        run = [m for m in menus if m.text.strip() == "Run"]
        assert run, f"no Run menu in the menu bar ({[m.text for m in menus]})"
        run[0].click()
        item = self.poll(lambda: self.visible(f".lm-Menu .lm-Menu-item[data-command='{RUN_ALL}']"
                                              ":not(.lm-mod-disabled)"),
                         10, f"the Run menu has no enabled {RUN_ALL!r} (Run All Cells) item")
        item.click()

    def visible(self, css: str, scope: WebElement | None = None) -> WebElement | None:
        for el in (scope or self.driver).find_elements(By.CSS_SELECTOR, css):
            if el.is_displayed():
                return el
        return None

    def running_prompts(self) -> int:
        """Cells running or queued: JupyterLab shows their prompt as [*]."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0] + ' .jp-InputArea-prompt'))"
            ".filter(p => p.textContent.includes('*')).length;", PANEL_CSS)

    def executed_prompts(self) -> int:
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0] + ' .jp-InputArea-prompt'))"
            ".filter(p => /\\[\\d+\\]/.test(p.textContent)).length;", PANEL_CSS)

    def explorer(self) -> tuple[WebElement, WebElement] | None:
        """The explorer's query <select> and its image, once both render (None while the page changes)."""
        try:
            for box in self.driver.find_elements(By.XPATH, EXPLORER_XPATH):
                select = box.find_elements(By.XPATH, "." + QUERY_XPATH + "//select")
                image = box.find_elements(By.CSS_SELECTOR, IMAGE_CSS)
                if select and image and image[0].get_attribute("src"):
                    return select[0], image[0]
        except StaleElementReferenceException:
            pass
        return None

    def run_until_explorer(self, timeout: float = EXPLORER_TIMEOUT) -> tuple[WebElement, WebElement]:
        """Run All Cells and wait for the explorer; fail early when every cell has finished (or the run
        stopped at an error) and the kernel is idle with no explorer on the page."""
        t0 = time.monotonic()
        self.run_all_cells()
        self.poll(lambda: self.running_prompts() > 0 or self.executed_prompts() > 0, 30,
                  "Run All Cells started no cell")
        quiet_since = None
        while True:
            found = self.explorer()
            if found:
                self.timings["run until explorer"] = time.monotonic() - t0
                return found
            states = self.server.kernel_states()
            if "dead" in states:
                raise ExplorerError("the notebook's kernel died")
            if self.running_prompts() == 0 and states == ["idle"]:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > QUIET:
                    raise ExplorerError("the notebook finished (or stopped at an error) without rendering "
                                        "the explorer (a widget box with Dropdown(description='query') and "
                                        "an Image)")
            else:
                quiet_since = None
            if time.monotonic() - t0 > timeout:
                raise ExplorerError(f"the explorer did not render within {timeout} s of Run All Cells")
            time.sleep(1)

    def png(self) -> dict:
        """The explorer's PNG now: its digest, first bytes and src, or {"error": ...} while it is being
        replaced (the widget revokes the old blob URL as it sets the new one)."""
        found = self.explorer()
        if not found:
            return {"error": "no explorer on the page"}
        try:
            return self.driver.execute_async_script(PNG_DIGEST_JS, found[1])
        except WebDriverException as exc:
            return {"error": exc.msg}

    def choose_other_query(self, select_el: WebElement) -> tuple[str, str]:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", select_el)
        select = Select(select_el)
        labels = [o.text for o in select.options]
        assert len(labels) > 1, f"the query dropdown offers one option only: {labels}"
        before = select.first_selected_option.text
        other = next(i for i in (len(labels) - 1, 0) if labels[i] != before)
        select.select_by_index(other)
        return before, labels[other]

    # -- waiting and diagnosis

    def screenshot(self, element: WebElement, name: str) -> Path:
        """The page with `element` in view, as `out`/`name` (kept beside pytest's other tmp files)."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        self.driver.save_screenshot(str(self.out / name))
        return self.out / name

    def poll(self, condition, timeout: float, message: str, every: float = 0.5):
        t0 = time.monotonic()
        while True:
            try:
                value = condition()
            except WebDriverException:
                value = None
            if value:
                return value
            if time.monotonic() - t0 > timeout:
                raise ExplorerError(message)
            time.sleep(every)

    def diagnosis(self) -> str:
        """Where the screenshot is, the page's error text (stderr and error outputs, dialogs), the
        browser console's errors and the server log's tail."""
        parts = []
        shot = self.out / "failure.png"
        try:
            self.driver.save_screenshot(str(shot))
            parts.append(f"screenshot: {shot}")
        except WebDriverException as exc:
            parts.append(f"no screenshot ({exc.msg})")
        try:
            texts = self.driver.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0] + ', .jp-Dialog'))"
                ".map(e => e.innerText.trim()).filter(Boolean);", STDERR_CSS)
            errors = "\n---\n".join(t[-3000:] for t in texts[-5:])
            parts.append("page error text:\n" + (errors or "(none)"))
            parts.append(f"cells running: {self.running_prompts()}, executed: {self.executed_prompts()}")
        except WebDriverException as exc:
            parts.append(f"could not read the page ({exc.msg})")
        try:
            console = [f"{e['level']} {e['message']}" for e in self.driver.get_log("browser")
                       if e["level"] in ("SEVERE", "WARNING")]
            parts.append("browser console:\n" + ("\n".join(console[-20:]) or "(nothing)"))
        except WebDriverException:
            pass
        parts.append(f"kernels: {self.server.kernel_states()}")
        parts.append("jupyter lab log (tail):\n" + self.server.log_tail(3000))
        text = "\n\n".join(parts)
        (self.out / "failure.txt").write_text(text)
        return text

    @contextmanager
    def diagnosed(self):
        """Failures inside carry the diagnosis (and leave a screenshot and failure.txt in `out`)."""
        try:
            yield
        except (AssertionError, WebDriverException) as exc:
            raise ExplorerError(f"{exc}\n\n{self.diagnosis()}") from exc


@pytest.fixture
def lab(tmp_path):
    root, state = tmp_path / "lab", tmp_path / "state"
    root.mkdir()
    state.mkdir()
    server = LabServer(root, state)
    try:
        server.start()
        driver = start_chromium(state)
        try:
            yield Lab(server, driver, tmp_path)
        finally:
            driver.quit()
    finally:
        server.stop()


def check_explorer(lab: Lab, notebook: Path, out_dir: Path, redraw_timeout: float = REDRAW_TIMEOUT
                   ) -> dict[str, float]:
    """Prepare `notebook` (ci, interactive), run it in the browser, change the query, see the PNG redrawn."""
    t0 = time.monotonic()
    name = lab.prepare(notebook, profile="ci", interactive=True, out_dir=str(out_dir))
    with lab.diagnosed():
        lab.open(name)
        select, _ = lab.run_until_explorer()
        seen = []  # the last PNG read, for the messages

        def png_read(differs_from: str | None = None):
            """The explorer's image once it holds a PNG (other than `differs_from`), else None."""
            seen[:] = [lab.png()]
            ok = seen[0].get("head") == PNG_SIGNATURE and seen[0]["digest"] != differs_from
            return seen[0] if ok else None

        first = lab.poll(png_read, 30, f"the explorer's image holds no PNG (last read {seen})")
        before, after = lab.choose_other_query(select)
        t1 = time.monotonic()
        redrawn = lab.poll(lambda: png_read(first["digest"]), redraw_timeout,
                           f"the explorer's PNG was not redrawn within {redraw_timeout} s of choosing query "
                           f"{after!r} (was {before!r}); first PNG {first}, last read {seen}")
        lab.timings["redraw"] = time.monotonic() - t1
        assert redrawn["src_digest"] != first["src_digest"], "the PNG changed but the <img> src did not"
        assert Select(lab.explorer()[0]).first_selected_option.text == after
        lab.screenshot(select, "explorer.png")
    lab.timings["whole check"] = time.monotonic() - t0
    return lab.timings


# ------------------------------------------------------------------------------------ stand-in notebook

STANDIN_CELLS = [
    # parameters, as every paper notebook has them
    'profile = "demo"\ninteractive = False\nout_dir = "runs"',
    # the injected parameters and the kernel's reidlib, for the harness to check
    "import json\nimport pathlib\nimport sys\n\nimport reidlib\n\n"
    "pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
    "print('stand-in: stderr is not an error', file=sys.stderr)\n"
    "(pathlib.Path(out_dir) / 'standin.json').write_text(json.dumps(\n"
    "    {'profile': profile, 'interactive': interactive, 'reidlib': reidlib.__file__}))",
    # a cell that takes a while, as training does
    "import time\n\ntime.sleep(3)",
    # the explorer: Dropdown(description='query') and an Image redrawn on change
    "import io\n\nimport ipywidgets as widgets\nfrom IPython.display import display\n"
    "from PIL import Image, ImageDraw\n\n"
    "COLOURS = {'q0001': 'firebrick', 'q0002': 'seagreen', 'q0003': 'steelblue'}\n\n\n"
    "def draw(query):\n"
    "    image = Image.new('RGB', (160, 90), COLOURS[query])\n"
    "    ImageDraw.Draw(image).text((10, 10), query, fill='white')\n"
    "    buf = io.BytesIO()\n"
    "    image.save(buf, format='PNG')\n"
    "    return buf.getvalue()\n\n\n"
    "if interactive:\n"
    "    query = widgets.Dropdown(options=list(COLOURS), description='query')\n"
    "    picture = widgets.Image(value=draw(query.value), format='png')\n"
    "    query.observe(lambda change: setattr(picture, 'value', draw(change['new'])), names='value')\n"
    "    display(widgets.VBox([widgets.HTML('<b>stand-in explorer</b>'), query, picture]))",
]


def write_standin(path: Path, fail: bool = False, redraw: bool = True) -> Path:
    """The stand-in notebook; `fail`: a cell before the explorer raises; not `redraw`: the image stays."""
    cells = list(STANDIN_CELLS)
    if fail:
        cells.insert(2, "1 / 0  # the run stops here")
    if not redraw:
        cells[-1] = cells[-1].replace("    query.observe(", "    # query.observe(")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in cells])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_harness_finds_and_drives_the_standin_explorer(lab, tmp_path):
    notebook = write_standin(tmp_path / "src" / "standin.ipynb")
    runs = tmp_path / "runs"
    timings = check_explorer(lab, notebook, runs)
    seen = json.loads((runs / "standin.json").read_text())
    assert seen["profile"] == "ci" and seen["interactive"] is True, "papermill did not inject the parameters"
    assert Path(seen["reidlib"]).resolve().is_relative_to(REPO), f"the kernel imported {seen['reidlib']}"
    print("stand-in timings (s):", {k: round(v, 1) for k, v in timings.items()})


@pytest.mark.parametrize("broken", ["error", "no redraw"])
def test_harness_reports_a_broken_explorer(lab, tmp_path, broken):
    """A notebook that stops at an error fails as soon as the run stops, with its traceback in the message;
    an explorer whose image ignores the query fails the redraw check; both leave a screenshot."""
    notebook = write_standin(tmp_path / "src" / "standin.ipynb", fail=broken == "error",
                             redraw=broken != "no redraw")
    with pytest.raises(ExplorerError) as failure:
        check_explorer(lab, notebook, tmp_path / "runs", redraw_timeout=5)
    message = str(failure.value)
    if broken == "error":
        assert "without rendering the explorer" in message, message  # not the explorer's timeout
        assert "ZeroDivisionError: division by zero" in message, message
    else:
        assert "PNG was not redrawn within 5 s of choosing query 'q0003' (was 'q0001')" in message, message
    assert (tmp_path / "failure.png").stat().st_size > 0 and "screenshot:" in message
    assert (tmp_path / "failure.txt").read_text() in message


# --------------------------------------------------------------------------------------------- real test


def test_compare_explorer_answers_a_new_query(lab, tmp_path):
    notebook = REPO / "notebooks" / NOTEBOOK
    assert notebook.is_file(), f"notebooks/{NOTEBOOK} is missing: CI runs its explorer in the browser"
    timings = check_explorer(lab, notebook, tmp_path / "runs")
    print(f"{NOTEBOOK} timings (s):", {k: round(v, 1) for k, v in timings.items()})
