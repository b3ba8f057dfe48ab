#!/usr/bin/env python3
"""Real-browser test of procpool-service's dashboard (apps/service/dashboard/).

Starts the real service and headless Chromium (Selenium), and checks the page end to end: the
empty state, a job submitted from the form with its progress bar, a crash's detail, cancel and
retry from the page, recovery after the service restarts, the page under 2,000+ jobs, and
signing in with an API token on a service started with --require-tokens.

    dashboard_test.py --service build/dev/apps/service/procpool-service --out /tmp/dash-out \
        [--screenshot docs/dashboard.png]

Needs chromium, chromium-driver and python3-selenium (Debian: apt-get install chromium
chromium-driver python3-selenium). Set DASHBOARD_DIR to serve the page from disk
(--dashboard-dir) instead of the copy compiled into the binary. Each check prints `PASS name`;
the first failure prints `FAIL name: why` (with failure.png and the console in --out) and exits 1;
without chromium it prints SKIP and exits 77. Only the standard library and Selenium.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    # Debian's python3-selenium lives in the system Python; another python3 may come first on PATH.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3") and \
            not os.environ.get("DASHBOARD_TEST_REEXEC"):
        os.environ["DASHBOARD_TEST_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("SKIP dashboard_test: needs selenium (apt-get install python3-selenium chromium chromium-driver)")
    sys.exit(77)

HANG_GUARD_S = 60  # every wait's upper bound: a hang fails the test instead of blocking it
SKIP = 77  # exit status when the browser is missing (ctest's SKIP_RETURN_CODE)


class StepFailed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------ service

class ServiceProcess:
    """The real procpool-service, started and stopped the way an operator would."""

    def __init__(self, binary, out_dir, extra_args=()):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.db = os.path.join(out_dir, "db.sqlite")
        self.log_path = os.path.join(out_dir, "service.log")
        open(self.log_path, "wb").close()
        self.proc = None
        self.port = 0
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)

    def start(self, port=0):
        args = [self.binary, "--port", str(port), "--db", self.db, "--workers", "2",
                "--drain-timeout-ms", "500"]
        if os.environ.get("DASHBOARD_DIR"):
            args += ["--dashboard-dir", os.environ["DASHBOARD_DIR"]]
        args += self.extra_args
        logf = open(self.log_path, "ab")
        logf.write(("\n$ " + " ".join(args) + "\n").encode())
        logf.flush()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        found = {}
        ready = threading.Event()

        def pump(proc):  # keeps reading stdout so the service never blocks on a full pipe
            with open(self.log_path, "ab") as out:
                for line in proc.stdout:
                    out.write(line)
                    out.flush()
                    m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
                    if m and not ready.is_set():
                        found["port"] = int(m.group(1))
                        ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        if not ready.wait(HANG_GUARD_S) or "port" not in found:
            code = self.proc.poll()
            raise StepFailed(f"the service did not print its 'listening on' line (exit status {code}); "
                             f"see {self.log_path}")
        self.port = found["port"]
        return self.port

    def stop(self):
        """SIGTERM and wait for the exit; returns the exit status."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise StepFailed(f"the service did not exit within {HANG_GUARD_S} s of SIGTERM")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Api:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.local = threading.local()
        self.port = port

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=HANG_GUARD_S) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def submit(self, task, input_=None, **extra):
        body = {"task": task, "input": input_ or {}, **extra}
        status, r = self.call("POST", "/jobs", body)
        if status != 202:
            raise StepFailed(f"POST /jobs {json.dumps(body)} -> {status} {r}")
        return r["id"]

    def job(self, job_id):
        status, r = self.call("GET", f"/jobs/{job_id}")
        if status != 200:
            raise StepFailed(f"GET /jobs/{job_id} -> {status} {r}")
        return r

    def submit_fast(self, body):
        """POST /jobs on this thread's keep-alive connection (for bulk submission)."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HANG_GUARD_S)
        conn.request("POST", "/jobs", json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = r.read()
        if r.status != 202:
            raise StepFailed(f"POST /jobs -> {r.status} {payload[:200]!r}")
        return json.loads(payload)["id"]


def submit_many(api, n, body, threads=8):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: api.submit_fast(body), range(n)))


# ------------------------------------------------------------------------------------ browser

class Page:
    def __init__(self, driver, out_dir):
        self.d = driver
        self.out = out_dir
        self.console = []

    def wait(self, what, cond, timeout=HANG_GUARD_S, poll=0.05):
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=poll,
                                 ignored_exceptions=(WebDriverException,)).until(lambda d: cond())
        except TimeoutException:
            raise StepFailed(f"timed out after {timeout} s waiting for {what}")

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def attr(self, css, name):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.getAttribute(arguments[1]) : null;", css, name)

    def text(self, css):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)

    def visible(self, css):
        els = self.d.find_elements(By.CSS_SELECTOR, css)
        return bool(els) and els[0].is_displayed()

    def row_state(self, job_id):
        return self.attr(f'#job-table tbody tr[data-job-id="{job_id}"] td.state', "data-state")

    def count(self, state):
        t = self.text(f"#count-{state}") or ""
        digits = re.sub(r"\D", "", t)
        return int(digits) if digits else None

    def select_row(self, job_id, keyboard=False):
        css = f'#job-table tbody tr[data-job-id="{job_id}"]'
        self.wait(f"row of job {job_id}", lambda: self.d.find_elements(By.CSS_SELECTOR, css))
        row = self.d.find_element(By.CSS_SELECTOR, css)
        if keyboard:
            self.js("arguments[0].focus()", row)
            row.send_keys(Keys.ENTER)
        else:
            row.click()
        self.wait(f"the detail panel of job {job_id}",
                  lambda: self.attr("#job-detail", "data-job-id") == str(job_id)
                  and self.visible("#detail-body"))

    def click(self, css):
        self.wait(f"{css} to be visible and enabled",
                  lambda: self.visible(css) and self.d.find_element(By.CSS_SELECTOR, css).is_enabled())
        self.d.find_element(By.CSS_SELECTOR, css).click()

    def console_entries(self):
        entries = self.d.get_log("browser")
        self.console.extend(entries)
        return entries

    def check_console(self, step, allowed=()):
        severe = []
        for e in self.console_entries():
            if e.get("level") == "SEVERE":
                if any(re.search(p, e.get("message", "")) for p in allowed):
                    continue
                severe.append(e.get("message"))
            elif e.get("level") == "WARNING":
                log(f"  console warning during {step}: {e.get('message')}")
        if severe:
            raise StepFailed("SEVERE console entries: " + " | ".join(severe))

    def screenshot(self, name):
        path = name if os.path.isabs(name) else os.path.join(self.out, name)
        self.d.save_screenshot(path)
        log(f"  screenshot {path}")
        return path


def start_browser():
    opts = Options()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--hide-scrollbars", "--force-device-scale-factor=1", "--lang=en-US"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
                              options=opts)
    driver.set_window_size(1400, 1000)
    # Make the viewport (what a screenshot shows) 1400x1000, whatever the window's decorations.
    dw, dh = driver.execute_script("return [window.outerWidth - window.innerWidth, "
                                   "window.outerHeight - window.innerHeight]")
    if dw or dh:
        driver.set_window_size(1400 + dw, 1000 + dh)
    return driver


# ------------------------------------------------------------------------------------ the test

class DashboardTest:
    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.service = ServiceProcess(os.path.abspath(args.service), self.out)
        self.driver = None
        self.page = None
        self.api = None
        self.figures = []

    def figure(self, name, value):
        line = f"{name}: {value}"
        self.figures.append(line)
        log(line)

    def run(self):
        steps = [
            ("page_loads_empty", self.step_page_loads),
            ("submit_from_form_progress", self.step_submit_from_form),
            ("crash_detail", self.step_crash_detail),
            ("cancel_from_page", self.step_cancel),
            ("retry_from_page", self.step_retry),
            ("restart_recovers", self.step_restart),
            ("screenshots", self.step_screenshots),
            ("many_jobs", self.step_many_jobs),
            ("filters_and_paging", self.step_filters_and_paging),
            ("sign_in_with_a_token", self.step_sign_in),
        ]
        try:
            port = self.service.start()
            self.api = Api(port)
            self.driver = start_browser()
            self.page = Page(self.driver, self.out)
            for name, fn in steps:
                self.current = name
                fn()
                log(f"PASS {name}")
            log("dashboard_test: all checks passed")
            return 0
        except StepFailed as e:
            log(f"FAIL {self.current if hasattr(self, 'current') else 'setup'}: {e}")
            self.failure_artifacts()
            return 1
        except Exception:  # a bug in the test or the browser: still a failure, with the trace
            log(f"FAIL {getattr(self, 'current', 'setup')}: unexpected error")
            traceback.print_exc()
            self.failure_artifacts()
            return 1
        finally:
            if self.driver:
                try:
                    self.driver.quit()
                except Exception:
                    pass
            self.service.kill()

    def failure_artifacts(self):
        if not self.page:
            return
        try:
            self.page.screenshot("failure.png")
            for e in self.page.console_entries():
                log(f"  console {e.get('level')}: {e.get('message')}")
        except Exception:
            pass
        log(f"  service log: {self.service.log_path}")

    # 1 ---------------------------------------------------------------------------------
    def step_page_loads(self):
        p = self.page
        self.driver.get(self.api.base + "/")
        p.wait("html[data-ready=true]", lambda: p.attr("html", "data-ready") == "true")
        p.wait("#conn-status to be live", lambda: p.attr("#conn-status", "data-status") == "live")
        p.wait("#empty-state to be visible", lambda: p.visible("#empty-state"))
        text = p.text("#empty-state")
        if "No jobs yet" not in text:
            raise StepFailed(f"empty state says {text!r}")
        p.wait("the task list in #task-select",
               lambda: self.driver.find_elements(By.CSS_SELECTOR, '#task-select option[value="sleep"]'))
        p.wait("#count-queued to show 0", lambda: p.count("queued") == 0)
        p.check_console("page load")
        p.screenshot("01-empty.png")

    # 2 ---------------------------------------------------------------------------------
    def step_submit_from_form(self):
        p, d = self.page, self.driver
        Select(d.find_element(By.ID, "task-select")).select_by_value("sleep")
        p.wait("the sleep task's ms field", lambda: d.find_elements(By.CSS_SELECTOR, '#task-fields input[name="ms"]'))
        ms_input = d.find_element(By.CSS_SELECTOR, '#task-fields input[name="ms"]')
        ms_input.clear()
        ms_input.send_keys("3000")
        d.find_element(By.ID, "submit-button").click()
        p.wait("#submit-message to name the new job",
               lambda: re.search(r"#(\d+)", p.text("#submit-message") or "")
               and p.attr("#submit-message", "data-kind") == "ok")
        job_id = int(re.search(r"#(\d+)", p.text("#submit-message")).group(1))
        self.sleep_job = job_id
        row = f'#job-table tbody tr[data-job-id="{job_id}"]'
        p.wait(f"row of job {job_id}", lambda: d.find_elements(By.CSS_SELECTOR, row))
        bar = f'#job-table .progress[data-job-id="{job_id}"]'
        seen = []

        def advanced():
            v = p.attr(bar, "aria-valuenow")
            state = p.row_state(job_id)
            if v is not None and state == "running":
                if not seen or seen[-1] != int(v):
                    seen.append(int(v))
            if len(seen) == 2:  # a screenshot of a live bar, once
                p.screenshot("02-running.png")
                seen.append(seen[-1])
            return any(b > a for a, b in zip(seen, seen[1:]))

        p.wait(f"the progress bar of job {job_id} to advance (seen {seen})", advanced)
        p.wait(f"job {job_id} to end succeeded in the table", lambda: p.row_state(job_id) == "succeeded")
        p.wait(f"a full bar on job {job_id}", lambda: p.attr(bar, "aria-valuenow") == "100")
        job = self.api.job(job_id)
        if job["state"] != "succeeded" or job["task"] != "sleep" or job["input"] != {"ms": 3000}:
            raise StepFailed(f"GET /jobs/{job_id} -> {job}")
        self.figure("dashboard.progress_values_seen", " ".join(str(v) for v in sorted(set(seen))))
        p.check_console("submit from the form")

    # 3 ---------------------------------------------------------------------------------
    def step_crash_detail(self):
        p = self.page
        job_id = self.api.submit("crash", {"signal": "SEGV"})
        self.crash_job = job_id
        p.wait(f"job {job_id} to fail in the table", lambda: p.row_state(job_id) == "failed")
        p.select_row(job_id, keyboard=True)
        p.wait("#detail-error to be visible", lambda: p.visible("#detail-error"))
        err_type = p.attr("#detail-error", "data-error-type")
        if err_type != "worker_crashed":
            raise StepFailed(f"#detail-error data-error-type is {err_type!r}, not worker_crashed")
        sig = p.text("#detail-error-signal") or ""
        if "SIGSEGV" not in sig or "11" not in sig:
            raise StepFailed(f"the detail's signal says {sig!r}, not SIGSEGV (11)")
        p.wait("the stderr tail section", lambda: p.visible("#detail-stderr"))
        tag = p.js("return document.getElementById('detail-stderr').tagName")
        tail = p.text("#detail-stderr") or ""
        if tag != "PRE" or "crash task" not in tail:
            raise StepFailed(f"#detail-stderr is a <{tag}> saying {tail!r}; expected the worker's stderr in a <pre>")
        api_tail = self.api.job(job_id)["error"].get("output_tail", "")
        if api_tail.strip() and api_tail.strip() not in tail:
            raise StepFailed("the page's stderr tail is not the job's error.output_tail")
        p.check_console("crash detail")
        p.screenshot("03-crash-detail.png")

    # 4 ---------------------------------------------------------------------------------
    def step_cancel(self):
        p = self.page
        job_id = self.api.submit("hang", {}, timeout_ms=120000)
        self.hang_job = job_id
        p.wait(f"job {job_id} to run in the table", lambda: p.row_state(job_id) == "running")
        p.select_row(job_id)
        p.click('#job-detail button[data-action="cancel"]')
        p.wait(f"job {job_id} to end cancelled in the table", lambda: p.row_state(job_id) == "cancelled")
        job = self.api.job(job_id)
        if job["state"] != "cancelled":
            raise StepFailed(f"GET /jobs/{job_id} says state {job['state']!r} after the page's cancel")
        p.wait("the retry button on the cancelled job",
               lambda: p.visible('#job-detail button[data-action="retry"]')
               and not p.visible('#job-detail button[data-action="cancel"]'))
        p.check_console("cancel")

    # 5 ---------------------------------------------------------------------------------
    def step_retry(self):
        p = self.page
        old = self.hang_job
        p.click('#job-detail button[data-action="retry"]')
        p.wait("the detail panel to show the new job",
               lambda: (p.attr("#job-detail", "data-job-id") or str(old)) not in ("", str(old)))
        new = int(p.attr("#job-detail", "data-job-id"))
        job = self.api.job(new)
        if job.get("retry_of") != old:
            raise StepFailed(f"GET /jobs/{new} has retry_of {job.get('retry_of')!r}, expected {old}")
        if job["task"] != "hang":
            raise StepFailed(f"the retry of a hang job is a {job['task']!r} job")
        p.wait(f"row of the new job {new}",
               lambda: self.driver.find_elements(By.CSS_SELECTOR, f'#job-table tbody tr[data-job-id="{new}"]'))
        p.wait("the retry_of link to the old job", lambda: (p.text("#detail-retry-of-link") or "").endswith(f"#{old}"))
        # Free the worker: the retried hang job would run until its timeout.
        status, r = self.api.call("DELETE", f"/jobs/{new}")
        if status not in (200, 202):
            raise StepFailed(f"DELETE /jobs/{new} -> {status} {r}")
        p.wait(f"the retried job {new} to end cancelled in the table", lambda: p.row_state(new) == "cancelled")
        p.check_console("retry")

    # 6 ---------------------------------------------------------------------------------
    def step_restart(self):
        p = self.page
        port = self.service.port
        p.check_console("before the restart")
        status = self.service.stop()
        if status not in (0, 3):
            raise StepFailed(f"the service exited with status {status} on SIGTERM")
        p.wait("#conn-status to leave live after the service stopped",
               lambda: p.attr("#conn-status", "data-status") != "live")
        t0 = time.monotonic()
        for attempt in range(20):  # the port can take a moment to be free again
            try:
                self.service.start(port)
                break
            except StepFailed:
                if attempt == 19 or time.monotonic() - t0 > HANG_GUARD_S:
                    raise
                time.sleep(0.25)
        p.wait("#conn-status to be live again by itself", lambda: p.attr("#conn-status", "data-status") == "live")
        self.figure("dashboard.reconnect_after_restart_ms", round((time.monotonic() - t0) * 1000))
        job_id = self.api.submit("sleep", {"ms": 0})
        p.wait(f"job {job_id} (submitted after the restart) in the table without a reload",
               lambda: p.row_state(job_id) == "succeeded")
        # While the service was down the browser logs refused connections; nothing else is allowed.
        p.check_console("restart", allowed=(r"ERR_CONNECTION_REFUSED", r"ERR_CONNECTION_RESET",
                                            r"ERR_EMPTY_RESPONSE", r"status of 503"))

    # 8 ---------------------------------------------------------------------------------
    def step_screenshots(self):
        """The README's view: a mix of states, a running progress bar, a detail panel open."""
        p, api = self.page, self.api
        api.submit("count_primes", {"n": 2000000})
        api.submit("throw", {"message": "bad input: the widget count must be positive"})
        timed = api.submit("hang", {}, timeout_ms=400)
        p.wait(f"job {timed} to time out", lambda: p.row_state(timed) == "timed_out")
        api.submit("sort", {"count": 200000, "seed": 7})
        long1 = api.submit("sleep", {"ms": 30000})
        long2 = api.submit("count_primes", {"n": 400000000})
        queued = api.submit("mandelbrot", {})
        p.wait("two running jobs with a moving bar",
               lambda: p.row_state(long1) == "running" and p.row_state(long2) == "running"
               and int(p.attr(f'#job-table .progress[data-job-id="{long1}"]', "aria-valuenow") or 0) >= 20)
        p.select_row(self.crash_job)
        p.wait("the chart summary", lambda: "jobs ended" in (p.text("#chart-summary") or ""))
        p.js("window.scrollTo(0, 0)")
        p.screenshot("04-dashboard.png")
        if self.args.screenshot:
            os.makedirs(os.path.dirname(os.path.abspath(self.args.screenshot)), exist_ok=True)
            p.screenshot(os.path.abspath(self.args.screenshot))
        # Phone width: one column, nothing wider than the screen.
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        try:
            p.wait("the layout at 390 px", lambda: p.js("return window.innerWidth") == 390)
            p.js("window.scrollTo(0, 0)")
            overflow = p.js("return document.documentElement.scrollWidth")
            if overflow > 390:
                raise StepFailed(f"at 390 px the page is {overflow} px wide (horizontal scrolling)")
            p.screenshot("05-phone.png")
            p.js("document.getElementById('jobs-panel').scrollIntoView()")
            p.screenshot("05-phone-jobs.png")
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        for job_id in (long1, long2, queued):
            api.call("DELETE", f"/jobs/{job_id}")
        p.wait("the long jobs to end", lambda: all(p.row_state(j) == "cancelled" for j in (long1, long2))
               and api.job(queued)["state"] in ("cancelled", "succeeded"))
        p.check_console("screenshots")

    # 7 ---------------------------------------------------------------------------------
    def step_many_jobs(self):
        p, api = self.page, self.api
        body = {"task": "sleep", "input": {"ms": 0}}
        t0 = time.monotonic()
        ids = submit_many(api, 2000, body)
        self.figure("dashboard.submit_2000_jobs_ms", round((time.monotonic() - t0) * 1000))

        def all_ended():
            _, s = api.call("GET", "/stats")
            return s["jobs"]["queued"] == 0 and s["jobs"]["running"] == 0

        p.wait("the 2,000 jobs to end", all_ended, poll=0.2)
        # A fresh load with 2,000+ jobs in the database.
        self.driver.get(self.api.base + "/")
        p.wait("html[data-ready=true] after the reload", lambda: p.attr("html", "data-ready") == "true")
        self.figure("dashboard.render_2000_jobs_ms", p.attr("html", "data-ready-ms"))
        rows = p.js("return document.querySelectorAll('#job-table tbody tr').length")
        top = p.attr("#job-table tbody tr", "data-job-id")
        if rows != 20 or int(top) != max(ids):
            raise StepFailed(f"after the reload the table has {rows} rows, the first job {top}; "
                             f"expected 20 rows from job {max(ids)}")
        nodes = p.js("return document.getElementsByTagName('*').length")
        self.figure("dashboard.dom_elements_2000_jobs", nodes)
        p.wait("#conn-status live after the reload", lambda: p.attr("#conn-status", "data-status") == "live")

        idle = []
        for _ in range(20):
            t = time.perf_counter()
            p.js("return 1")
            idle.append((time.perf_counter() - t) * 1000)
        idle.sort()
        self.figure("dashboard.script_roundtrip_idle_ms_p50", round(idle[len(idle) // 2], 1))
        # Another 2,000 while the page is open: it keeps answering while their events stream.
        events_before = int(p.js("return Number(document.body.dataset.jobEvents || 0)"))
        result = {}
        submitter = threading.Thread(target=lambda: result.setdefault("ids", submit_many(api, 2000, body)))
        t0 = time.monotonic()
        submitter.start()
        rtts = []
        while submitter.is_alive() or not all_ended():
            s = time.perf_counter()
            if p.js("return 1") != 1:
                raise StepFailed("the page did not answer a script")
            rtts.append((time.perf_counter() - s) * 1000)
            if time.monotonic() - t0 > HANG_GUARD_S:
                raise StepFailed("the second 2,000 jobs did not end within the hang guard")
            time.sleep(0.05)
        submitter.join()
        _, stats = api.call("GET", "/stats")
        want = stats["jobs"]["succeeded"]
        p.wait(f"#count-succeeded to show {want}", lambda: p.count("succeeded") == want)
        self.figure("dashboard.events_2000_jobs_settled_ms", round((time.monotonic() - t0) * 1000))
        rtts.sort()
        self.figure("dashboard.script_roundtrip_while_streaming_ms_p50", round(rtts[len(rtts) // 2], 1))
        self.figure("dashboard.script_roundtrip_while_streaming_ms_max", round(rtts[-1], 1))
        newest = max(result["ids"])
        p.wait(f"the newest job {newest} at the top of the table",
               lambda: p.attr("#job-table tbody tr", "data-job-id") == str(newest))
        events = int(p.js("return Number(document.body.dataset.jobEvents || 0)")) - events_before
        self.figure("dashboard.job_events_received", events)
        rows = p.js("return document.querySelectorAll('#job-table tbody tr').length")
        if rows != 20:
            raise StepFailed(f"the table has {rows} rows while streaming; a page is 20")
        p.select_row(newest, keyboard=True)
        p.screenshot("06-many-jobs.png")
        p.check_console("2,000 jobs")

    # 9 ---------------------------------------------------------------------------------
    def step_filters_and_paging(self):
        p, d = self.page, self.driver
        first = lambda: p.attr("#job-table tbody tr", "data-job-id")
        ids = lambda: [int(x) for x in p.js(
            "return [...document.querySelectorAll('#job-table tbody tr')].map(r => r.dataset.jobId)")]
        _, newest = self.api.call("GET", "/jobs?limit=40")
        expected = [j["id"] for j in newest["jobs"]]
        p.wait("the newest page", lambda: ids() == expected[:20])
        p.click("#page-older")
        p.wait("the second page (jobs 21-40 from the newest)", lambda: ids() == expected[20:40])
        p.click("#page-newer")
        p.wait("the newest page again", lambda: ids() == expected[:20])
        Select(d.find_element(By.ID, "filter-state")).select_by_value("cancelled")
        _, cancelled = self.api.call("GET", "/jobs?state=cancelled&limit=20")
        want = [j["id"] for j in cancelled["jobs"]]
        p.wait(f"only cancelled jobs {want}", lambda: ids() == want)
        Select(d.find_element(By.ID, "filter-state")).select_by_value("")
        Select(d.find_element(By.ID, "filter-task")).select_by_value("crash")
        p.wait(f"only the crash job {self.crash_job}", lambda: ids() == [self.crash_job])
        # A new crash job arrives live in the filtered view; a sleep job does not.
        self.api.submit("sleep", {"ms": 0})
        crash2 = self.api.submit("crash", {"signal": "ABRT"})
        p.wait(f"the new crash job {crash2} on top", lambda: ids() == [crash2, self.crash_job])
        p.wait(f"job {crash2} to fail", lambda: p.row_state(crash2) == "failed")
        Select(d.find_element(By.ID, "filter-task")).select_by_value("")
        p.wait("the unfiltered newest page", lambda: first() == str(crash2))
        p.check_console("filters and paging")


    # 10 --------------------------------------------------------------------------------
    def step_sign_in(self):
        """A service started with --require-tokens: the page shows its login form on the first
        401; a wrong token is refused in the form; the right one signs in (a cookie), after which
        the live stream and submitting from the form work."""
        p, d = self.page, self.driver
        out = os.path.join(self.out, "tokens")
        os.makedirs(out, exist_ok=True)
        svc = ServiceProcess(self.service.binary, out, ["--require-tokens"])
        try:
            created = subprocess.run([svc.binary, "token", "create", "--scope", "submit", "--name",
                                      "browser", "--db", svc.db], capture_output=True, timeout=HANG_GUARD_S)
            if created.returncode != 0:
                raise StepFailed(f"token create: {created.stderr.decode(errors='replace')}")
            token = created.stdout.decode().strip()
            port = svc.start()
            d.get(f"http://127.0.0.1:{port}/")
            p.wait("#login to be shown", lambda: p.visible("#login"))
            if "token" not in (p.text("#login-reason") or ""):
                raise StepFailed(f"#login-reason says {p.text('#login-reason')!r}")
            p.screenshot("10-sign-in.png")
            field = d.find_element(By.ID, "login-token")
            field.send_keys("pp_1_" + "0" * 64)
            d.find_element(By.ID, "login-button").click()
            p.wait("#login-message to say the token is not valid",
                   lambda: p.attr("#login-message", "data-kind") == "error"
                   and "not valid" in (p.text("#login-message") or ""))
            field.clear()
            field.send_keys(token)
            d.find_element(By.ID, "login-button").click()
            p.wait("html[data-ready=true] after signing in", lambda: p.attr("html", "data-ready") == "true")
            p.wait("#conn-status to be live with the cookie", lambda: p.attr("#conn-status", "data-status") == "live")
            if p.visible("#login"):
                raise StepFailed("#login is still shown after signing in")
            cookie = d.get_cookie("procpool_session")
            if not cookie or not cookie.get("httpOnly") or cookie.get("sameSite") != "Strict":
                raise StepFailed(f"the session cookie is {cookie}")
            if p.js("return document.cookie.includes('procpool_session')"):
                raise StepFailed("the page's scripts can read the session cookie")
            p.wait("the task list in #task-select",
                   lambda: d.find_elements(By.CSS_SELECTOR, '#task-select option[value="sleep"]'))
            Select(d.find_element(By.ID, "task-select")).select_by_value("sleep")
            p.wait("the sleep task's ms field", lambda: d.find_elements(By.CSS_SELECTOR, '#task-fields input[name="ms"]'))
            ms_input = d.find_element(By.CSS_SELECTOR, '#task-fields input[name="ms"]')
            ms_input.clear()
            ms_input.send_keys("1")
            d.find_element(By.ID, "submit-button").click()
            p.wait("#submit-message to name the job submitted with the cookie",
                   lambda: p.attr("#submit-message", "data-kind") == "ok")
            job_id = int(re.search(r"#(\d+)", p.text("#submit-message")).group(1))
            p.wait(f"job {job_id} to end succeeded, seen live", lambda: p.row_state(job_id) == "succeeded")
            # The 401s before signing in are logged by the browser as failed loads: expected.
            p.check_console("sign in", allowed=(r"401", r"Unauthorized"))
            p.screenshot("11-signed-in.png")
        finally:
            svc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--service", required=True, help="path to the procpool-service binary")
    ap.add_argument("--out", required=True, help="directory for the database, logs and screenshots")
    ap.add_argument("--screenshot", help="also write the README screenshot (1400x1000) here")
    args = ap.parse_args()
    if not os.access(args.service, os.X_OK):
        sys.exit(f"dashboard_test: {args.service} is not an executable")
    for tool in (os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                 os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")):
        if not os.access(tool, os.X_OK):
            log(f"SKIP dashboard_test: {tool} is missing (apt-get install chromium chromium-driver)")
            return SKIP
    return DashboardTest(args).run()


if __name__ == "__main__":
    sys.exit(main())
