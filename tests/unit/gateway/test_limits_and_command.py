"""Token buckets (pure), and `pbxlink gateway` refusing a bad configuration with exit 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pbxlink.foundation.errors import EX_CONFIG
from pbxlink.gateway.limits import RateLimiter


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") == 1.0
    assert limiter.allow("a", 0.5) is False
    assert limiter.allow("a", 1.0) is True
    assert limiter.allow("b", 1.0) is True  # every key has its own bucket


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    limiter = RateLimiter(per_minute=600, burst=2)
    limiter.allow("a", 0.0)
    assert [limiter.allow("a", 3600.0) for _ in range(3)] == [True, True, False]


def test_full_buckets_are_forgotten_when_there_are_many_keys() -> None:
    limiter = RateLimiter(per_minute=60, burst=1)
    for n in range(10001):
        limiter.allow(f"k{n}", 0.0)
    limiter.allow("late", 100.0)  # everyone is full again by now: the others are dropped
    assert len(limiter._buckets) <= 2  # noqa: SLF001 - the bound is the point of the test


def run_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxlink.cli", "gateway", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gateway_exits_78_naming_every_bad_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[gateway]\nport = 0\nflood_burst = 0\n[gateway.web.site]\norigins = ["nope"]\n')
    result = run_gateway("-c", str(cfg))
    assert result.returncode == EX_CONFIG
    for problem in (
        "gateway.port",
        "gateway.flood_burst",
        "gateway.web.site.token_file",
        "gateway.web.site.origins",
    ):
        assert problem in result.stderr


def test_gateway_exits_78_when_a_sources_secret_is_not_found(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text('[gateway.telegram.bot]\ntoken_credential = "telegram-bot"\n')
    result = run_gateway("-c", str(cfg))
    assert result.returncode == EX_CONFIG
    assert "gateway.telegram.bot.token: not found" in result.stderr
