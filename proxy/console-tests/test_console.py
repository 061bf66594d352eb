"""The web console in headless Chromium against a live `defibus standalone`: every page loads
without a JavaScript error; the Topics and Groups pages show the figures `defibus admin topic
stats` and `admin topic list` print; a deploy clicked in the console is what `defibus sgs
service list` then shows; a message looked up shows what `defibus trace` prints; with security on, no token brings the sign-in prompt and a token
without grants the 403 message."""

import json

import pytest
from selenium.webdriver.common.by import By

from conftest import Bus, screenshot, table, wait_for

TOPIC = "A10-20190001"
SERVICE = "20190009"
PAGES = ["cluster", "topics", "groups", "services", "lookup"]


@pytest.fixture(scope="module")
def bus():
    bus = Bus()
    bus.cli("admin", "topic", "create", "--topic", TOPIC, "--queues", "2")
    # Keyed messages share a queue; keyless ones go round robin.
    bus.cli("produce", "--topic", TOPIC, "--key", "order-42", stdin="one\ntwo\nthree\nfour\nfive\n")
    bus.cli("produce", "--topic", TOPIC, stdin="a\nb\nc\n")
    bus.cli("consume", "--topic", TOPIC, "--group", "G1", "--count", "8")
    # Forty more, which G1 does not consume.
    bus.cli("produce", "--topic", TOPIC, stdin="".join(f"later {i}\n" for i in range(40)))
    # A live member that starts at the end: the stored messages stay behind it, as lag.
    bus.start("consume", "--topic", TOPIC, "--group", "live", "--from", "latest", "--timeout-ms", "600000")
    bus.cli("sgs", "service", "apply", "--id", SERVICE, "--name", "console-test", "--owner", "ops",
            "--areas", "A10", "--queues", "2")
    yield bus
    bus.stop()


def open_page(browser, bus, page):
    browser.get(bus.url("/console#" + page))
    # The console names the page on <body data-loaded> once that page's data is drawn.
    wait_for(f"the {page} page to load",
             lambda: browser.execute_script("return document.body.dataset.loaded") == page)


def eventually(what, read, want):
    """Waits until `read()` equals `want` (the page refreshes every 5 s); on timeout, fails
    showing both."""
    try:
        wait_for(what, lambda: read() == want)
    except AssertionError:
        assert read() == want, what
        raise


def severe_logs(browser):
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def figures(browser, selector, cells):
    """Each row matching `selector`: its data attributes and the numbers in `cells` (class
    names), read in one script so a refresh cannot replace the rows half-way."""
    return browser.execute_script(
        """
        const [selector, cells] = arguments;
        const number = (cell) => cell && cell.textContent !== "–" ? Number(cell.textContent.replaceAll(",", "")) : null;
        return [...document.querySelectorAll(selector)].map((row) => {
          const out = Object.assign({}, row.dataset);
          for (const name of cells) out[name] = number(row.querySelector("." + name));
          return out;
        });
        """, selector, cells)


def test_every_page_loads_without_a_javascript_error(browser, bus):
    browser.get(bus.url("/console"))
    browser.get_log("browser")  # drop anything from before
    for page in PAGES:
        open_page(browser, bus, page)
        heading = browser.find_element(By.ID, page + "-title")
        assert heading.is_displayed(), page
        assert severe_logs(browser) == [], page
    open_page(browser, bus, "cluster")
    wait_for("the broker's row", lambda: browser.find_elements(By.CSS_SELECTOR, "#brokers tr[data-broker='broker-a']"))
    # Every table header cell is a real header, for screen readers.
    assert browser.find_elements(By.CSS_SELECTOR, "#brokers th[scope='col']")
    screenshot(browser, "cluster")


def test_the_topics_page_shows_what_admin_topic_stats_prints(browser, bus):
    stats = [row for row in table(bus.cli("admin", "topic", "stats", "--topic", TOPIC).stdout)]
    listed = [row for row in table(bus.cli("admin", "topic", "list").stdout) if row["TOPIC"] == TOPIC][0]
    depths = [int(d) for d in listed["DEPTHS"].split(",")]
    want = sorted({(row["QUEUE"], int(row["START"]), int(row["NEXT"]), depths[int(row["QUEUE"])], int(listed["MAX_DEPTH"]))
                   for row in stats})
    assert sum(w[2] for w in want) == 48, "48 messages were produced"
    open_page(browser, bus, "topics")

    def shown():
        rows = figures(browser, f"#page-topics tr[data-topic='{TOPIC}'][data-queue]", ["start", "end", "depth-value", "depth-limit"])
        return sorted(((r["queue"], r["start"], r["end"], r["depth-value"], r["depth-limit"]) for r in rows), key=repr)

    eventually("the Topics page to show the CLI's figures", shown, want)
    # The depth bar is a <meter> against the limit.
    meter = browser.find_element(By.CSS_SELECTOR, f"#page-topics tr[data-topic='{TOPIC}'] meter")
    assert meter.get_attribute("max") == listed["MAX_DEPTH"]
    # A rate needs two reads: after the next refresh the In column holds a figure.
    wait_for("a rate after two reads", lambda: all(
        r["rate"] is not None for r in figures(browser, f"#page-topics tr[data-topic='{TOPIC}'][data-queue]", ["rate"])))
    screenshot(browser, "topics")


def test_the_groups_page_shows_the_lag_admin_topic_stats_prints(browser, bus):
    def stable_cli_lag():
        rows = [r for r in table(bus.cli("admin", "topic", "stats", "--topic", TOPIC).stdout) if r["GROUP"] == "live"]
        return {r["QUEUE"]: int(r["LAG"]) for r in rows} if len(rows) == 2 else None

    want = wait_for("the live member to hold both queues", stable_cli_lag)
    open_page(browser, bus, "groups")

    def shown():
        rows = figures(browser, f"#page-groups tr[data-group='live'][data-topic='{TOPIC}']", ["lag"])
        return {r["queue"]: r["lag"] for r in rows}

    eventually("the Groups page to show the CLI's lag", shown, want)
    assert sum(want.values()) > 0, "a member that started at the end leaves the stored messages as lag"
    screenshot(browser, "groups")


def test_a_message_looked_up_shows_what_defibus_trace_prints(browser, bus):
    trace = json.loads(bus.cli("trace", "--topic", TOPIC, "--key", "order-42", "--json").stdout)
    [queue] = [q for q in trace["queues"] if q["messages"]]
    first = queue["messages"][0]
    want = {g["group"]: g["committed"]["state"] for g in first["groups"]}
    assert want.get("G1") == "committed", want
    open_page(browser, bus, "lookup")
    browser.find_element(By.ID, "lookup-topic").send_keys(TOPIC)
    browser.find_element(By.ID, "lookup-offset").send_keys(str(first["offset"]))
    browser.find_element(By.ID, "lookup-queue").send_keys(str(queue["queue_id"]))
    browser.find_element(By.CSS_SELECTOR, "#lookup-form button[type='submit']").click()
    wait_for("the lookup to be drawn",
             lambda: browser.execute_script("return document.body.dataset.loaded") == "lookup"
             and browser.find_elements(By.CSS_SELECTOR, "#page-lookup article.message"))
    heading = browser.find_element(By.CSS_SELECTOR, "#page-lookup article.message h4").text
    assert heading == f"event at offset {first['offset']}", heading
    shown = browser.execute_script("""
        return Object.fromEntries([...document.querySelectorAll("#page-lookup tr[data-group]")]
          .map((row) => [row.dataset.group, row.querySelector(".committed").textContent]));""")
    assert set(shown) == set(want), shown
    assert shown["G1"].startswith("committed at "), shown
    assert severe_logs(browser) == []
    screenshot(browser, "lookup")


def test_a_deploy_clicked_in_the_console_shows_in_sgs_service_list(browser, bus):
    before = {r["SERVICE"]: r["STATE"] for r in table(bus.cli("sgs", "service", "list").stdout)}
    assert before[SERVICE] == "applied"
    open_page(browser, bus, "services")
    button = wait_for("the Deploy button", lambda: browser.find_elements(
        By.CSS_SELECTOR, f"button[data-action='deploy'][data-service='{SERVICE}']"))[0]
    button.click()
    dialog = browser.find_element(By.ID, "confirm")
    wait_for("the confirmation", dialog.is_displayed)
    assert SERVICE in browser.find_element(By.ID, "confirm-text").text
    browser.find_element(By.ID, "confirm-ok").click()
    notice = browser.find_element(By.ID, "notice")
    wait_for("the deploy's result", lambda: "is now deployed" in notice.text, timeout=120)
    after = {r["SERVICE"]: r["STATE"] for r in table(bus.cli("sgs", "service", "list").stdout)}
    assert after[SERVICE] == "deployed"
    wait_for("the page to show it deployed", lambda: browser.execute_script(
        "const c = document.querySelector(arguments[0]); return c && c.textContent === 'deployed';",
        f"tr[data-service='{SERVICE}'] .service-state"))
    screenshot(browser, "services")
    assert severe_logs(browser) == []


@pytest.fixture(scope="module")
def secured():
    bus = Bus(security=True)
    bus.cli("sgs", "service", "apply", "--id", SERVICE, "--name", "console-test", "--owner", "ops",
            "--areas", "A10", "--queues", "2")
    # A principal the policy grants nothing.
    bus.cli("admin", "token", "create", "nobody", "--out", bus.secrets / "nobody.token")
    yield bus
    bus.stop()


def sign_in(browser, token):
    field = wait_for("the sign-in form", lambda: browser.find_element(By.ID, "token").is_displayed()
                     and browser.find_element(By.ID, "token"))
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type='submit']").click()


def test_with_security_no_token_asks_for_one_and_a_token_without_grants_is_refused(browser, secured):
    browser.get(secured.url("/console#services"))
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait_for("the sign-in prompt", lambda: browser.find_element(By.ID, "login").is_displayed())
    assert browser.find_element(By.CSS_SELECTOR, "label[for='token']").text == "Bearer token"
    screenshot(browser, "login")

    nobody = (secured.secrets / "nobody.token").read_text().strip()
    sign_in(browser, nobody)
    # Reading needs no grant (as the CLI's reads); deploying needs admin_service.
    button = wait_for("the services of the SGS", lambda: browser.find_elements(
        By.CSS_SELECTOR, f"button[data-action='deploy'][data-service='{SERVICE}']"))[0]
    button.click()
    browser.find_element(By.ID, "confirm-ok").click()
    problem = browser.find_element(By.ID, "problem")
    wait_for("the 403 message", lambda: problem.is_displayed() and "Permission denied (403)" in problem.text)
    assert "nobody" in problem.text and "admin_service" in problem.text
    states = {r["SERVICE"]: r["STATE"] for r in table(secured.cli("sgs", "service", "list").stdout)}
    assert states[SERVICE] == "applied", "nothing was deployed"

    # A token the proxy does not know brings the prompt back, saying why.
    browser.find_element(By.ID, "sign-out").click()
    sign_in(browser, "dfb.0badc0de.not-a-real-secret")
    reason = browser.find_element(By.ID, "login-reason")
    wait_for("the refusal", lambda: "refused" in reason.text)
