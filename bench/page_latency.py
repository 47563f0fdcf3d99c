"""Time from a daemon's update_status to the new text on the Daemons page, in a real browser.

The browser stamps each change with its wall clock (a MutationObserver on the status line);
the daemon side stamps the call with the same machine's wall clock. Prints a table and
writes bench/results/page_latency.json (page_latency.tiny.json with --tiny).

    python -m bench.page_latency [--rounds 20] [--tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

from bench import write_results
from tests.daemons_for_tests import Worker
from tests.test_page import CHROMIUM, CHROMIUM_ARGS, open_page
from tests.webharness import config_text, running_warden

OBSERVE = """
(el) => {
  window.seen = {};
  new MutationObserver(() => {
    const stamp = performance.timeOrigin + performance.now();
    if (!(el.textContent in window.seen)) window.seen[el.textContent] = stamp;
  }).observe(el, {childList: true, characterData: true, subtree: true});
}
"""


async def measure(rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        yaml = config_text("  worker:\n    interval: 3600\n")
        async with running_warden(Path(folder), [Worker], yaml=yaml) as warden, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await open_page(browser, warden.url)
                status = page.get_by_test_id("card-worker").get_by_test_id("status-message")
                await status.evaluate(OBSERVE)
                daemon = warden.supervisor.runner("worker").daemon
                sent = {}
                for n in range(rounds):
                    text = f"mark {n}"
                    sent[text] = time.time() * 1000
                    await daemon.update_status(text)
                    await page.wait_for_function("t => t in window.seen", arg=text)
                seen = await page.evaluate("window.seen")
            finally:
                await browser.close()
    return [seen[text] - at for text, at in sent.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="2 rounds, written to page_latency.tiny.json")
    options = parser.parse_args()
    rounds = 2 if options.tiny else options.rounds
    latencies = asyncio.run(measure(rounds))
    result = {
        "rounds": rounds,
        "median_ms": statistics.median(latencies),
        "min_ms": min(latencies),
        "max_ms": max(latencies),
    }
    print(f"{'update_status -> page':24} {'rounds':>6} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    print(f"{'':24} {rounds:6d} {result['median_ms']:10.2f} {result['min_ms']:8.2f} {result['max_ms']:8.2f}")
    write_results("page_latency", result, tiny=options.tiny)


if __name__ == "__main__":
    main()
