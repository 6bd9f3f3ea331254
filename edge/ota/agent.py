"""The device's side of an update, driven by the daemon's main thread (`tick()` every loop turn).

Steps, each written to the journal before it starts:
  downloading -> verifying (signature and hashes, then unpacked into the standby slot; in a thread)
  -> installed -> switching (`current` renamed to the new version) -> checking (pipelines reloaded,
  health check) -> done; on any failure after the switch: rolling_back -> rolled_back. A package that
  fails to verify or install ends `failed` with nothing changed.
After a power cut `recover()` runs before any pipeline opens its bundle: an update that had switched but not
passed its health check is rolled back (an unconfirmed version never survives a restart); one that had
not switched yet goes on from where it was (the fetched chunks and the unpacked slot are kept).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from runtimes.errors import EdgeError

from ..daemon import contract
from ..daemon.commands import CommandError
from ..packaging import verify_package
from .fetch import ChunkDownload, FetchError, UrlDownload
from .health import HealthCheck
from .journal import Journal
from .slots import Slots

if TYPE_CHECKING:
    from ..daemon.config import DaemonConfig
    from ..daemon.mqtt import MqttPublisher
    from ..daemon.worker import PipelineWorker

log = logging.getLogger("edge.ota")

BUSY = ("downloading", "verifying", "installed", "switching", "checking", "rolling_back")
CRASH_ENV = "EDGE_OTA_CRASH_AT"       # fault injection for the kill -9 tests: a step name (docs/ota.md)
PROGRESS_EVERY_S = 1.0
INTERRUPTED = "interrupted by a restart before the health check passed; rolled back"


def ota_folder(config: "DaemonConfig") -> Path:
    return config.state_dir / "ota"


def crash_point(step: str) -> None:
    """`kill -9` of this very process at `step` when the tests ask for it (never set in production)."""
    if os.environ.get(CRASH_ENV) == step:
        log.warning("OTA: %s=%s: killing this process now", CRASH_ENV, step)
        os.kill(os.getpid(), signal.SIGKILL)


def recover(config: "DaemonConfig") -> str | None:
    """Before the pipelines open their bundles: finish or undo a switch a restart interrupted."""
    journal = Journal(ota_folder(config))
    data = journal.load()
    if data.get("step") not in ("switching", "checking", "rolling_back"):
        return None
    offer = data["offer"]
    slots = Slots(config.bundles_dir, offer["name"])
    if data.get("from"):
        slots.restore(data["from"], data.get("standby_before"))
    data.update(step="rolled_back", error=data.get("error") or INTERRUPTED)
    journal.save(data)
    log.warning("OTA: %s %s: %s (running %s)", offer["name"], offer["version"], data["error"], slots.active)
    return data["error"]


class OtaAgent:
    def __init__(self, config: "DaemonConfig", publisher: "MqttPublisher", workers: dict[str, "PipelineWorker"],
                 on_reload: Callable[[], None] = lambda: None):
        """`on_reload`: called after pipelines reloaded (the daemon announces its new description)."""
        self.config, self.publisher, self.device = config, publisher, config.device_id
        self.on_reload = on_reload
        self.settings = config.ota
        self.folder = ota_folder(config)
        self.journal = Journal(self.folder)
        self.data = self.journal.load()
        self.managed = _managed(config, workers)
        self.fetch: ChunkDownload | UrlDownload | None = None
        self.check: HealthCheck | None = None
        self._install: threading.Thread | None = None
        self._install_error: str | None = None
        self._published_at = 0.0
        self._switched_at: float | None = None
        publisher.subscribe(contract.ota_chunk_filter(self.device), self._chunk)
        if self.step in ("downloading", "verifying"):
            self._resume()
        self.publish()

    @property
    def step(self) -> str:
        return self.data.get("step", "idle")

    # --- the offer (a command, main thread) ----------------------------------------------------------
    def offer(self, arguments: dict[str, Any]) -> dict[str, Any]:
        offer = dict(arguments)
        if self.step in BUSY:
            if self.data["offer"]["offer"] == offer["offer"]:
                return {"offer": offer["offer"], "state": self.step}       # the operator asked again
            raise CommandError(f"busy with the update to {self.data['offer']['name']} "
                               f"{self.data['offer']['version']} ({self.step})")
        if offer["name"] not in self.managed:
            raise CommandError(f"no pipeline here runs bundle '{offer['name']}' from "
                               f"{self.config.bundles_dir}/{offer['name']}/current")
        slots = Slots(self.config.bundles_dir, offer["name"])
        shutil.rmtree(self.folder / "package", ignore_errors=True)    # another offer's leftovers
        self.data = {"offer": offer, "step": "downloading", "from": slots.active, "standby_before": slots.standby,
                     "started": time.time()}
        if slots.active == offer["version"]:
            self.data.update(step="done", note="already running this version")
        self.journal.save(self.data)
        log.info("OTA: offer of %s %s (%.1f MB) %s", offer["name"], offer["version"], offer["size"] / 1e6,
                 "already running" if self.step == "done" else "accepted")
        if self.step == "downloading":
            self._resume()
        self.publish()
        return {"offer": offer["offer"], "state": self.step}

    def _resume(self) -> None:
        offer = self.data["offer"]
        folder = self.folder / "package"
        if self.step == "verifying":
            self._start_install(folder / "package.edgepkg")
        elif offer.get("url"):
            self.fetch = UrlDownload(folder, offer)
        else:
            self.fetch = ChunkDownload(folder, offer)

    # --- every main-loop turn ------------------------------------------------------------------------
    def tick(self) -> None:
        try:
            {"downloading": self._downloading, "verifying": self._verifying, "installed": self._switch,
             "checking": self._checking}.get(self.step, lambda: None)()
        except EdgeError as err:
            self._fail_or_roll_back(str(err))

    def _downloading(self) -> None:
        fetch = self.fetch
        if isinstance(fetch, UrlDownload):
            if fetch.finished:
                if fetch.error:
                    return self._end("failed", f"download failed: {fetch.error}")
                self._downloaded(fetch.path)
            return self.publish(progress_only=True)
        if fetch.complete:
            try:
                return self._downloaded(fetch.finish())
            except FetchError as err:
                log.warning("OTA: %s", err)
        wanted = fetch.wants(self.settings.window, self.settings.chunk_timeout)
        if wanted:
            body = json.dumps({"offer": self.data["offer"]["offer"], "chunks": wanted}).encode()
            if not self.publisher.send_now(contract.ota_want_topic(self.device), body, qos=1):
                for index in wanted:            # not connected: ask again once the broker is back
                    fetch.asked.pop(index, None)
        self.publish(progress_only=True)

    def _chunk(self, topic: str, payload: bytes) -> None:
        parts = topic.rsplit("/", 2)
        if self.step != "downloading" or not isinstance(self.fetch, ChunkDownload) or len(parts) != 3:
            return
        if parts[1] != self.data["offer"]["offer"] or not parts[2].isdigit():
            return                                   # another offer's chunk, still on its way
        if self.fetch.accept(int(parts[2]), payload) and len(self.fetch.have) == 1:
            crash_point("downloading")

    def _downloaded(self, path: Path) -> None:
        self.data.update(step="verifying", download_s=round(time.time() - self.data["started"], 2))
        self.journal.save(self.data)
        self.fetch = None
        self._start_install(path)
        self.publish()

    def _start_install(self, pkg: Path) -> None:
        self._install_error = None
        self._install = threading.Thread(target=self._install_run, args=(pkg,), name="ota-install", daemon=True)
        self._install.start()

    def _install_run(self, pkg: Path) -> None:
        offer = self.data["offer"]
        try:
            verified = verify_package(pkg, self.settings.trusted_keys)        # before anything is touched
            m = verified.manifest
            if (m.name, m.version) != (offer["name"], offer["version"]):
                raise EdgeError(f"package is {m.name} {m.version}, the offer said {offer['name']} {offer['version']}")
            slots = Slots(self.config.bundles_dir, offer["name"])
            slots.clear_standby()
            crash_point("verifying")         # verified, the old standby gone, the new slot not unpacked yet
            slots.install(pkg, m, self.settings.trusted_keys)
        except EdgeError as err:
            self._install_error = str(err)
        except Exception as err:             # the update fails, the daemon lives on
            log.exception("OTA: install failed")
            self._install_error = f"internal error: {type(err).__name__}: {err}"

    def _verifying(self) -> None:
        if self._install is None or self._install.is_alive():
            return
        if self._install_error:
            return self._end("failed", f"refused, nothing changed: {self._install_error}")
        self.data.update(step="installed")
        self.journal.save(self.data)
        crash_point("installed")
        shutil.rmtree(self.folder / "package", ignore_errors=True)
        self._switch()

    def _switch(self) -> None:
        offer = self.data["offer"]
        slots = Slots(self.config.bundles_dir, offer["name"])
        self.data.update(step="switching")
        self.journal.save(self.data)
        crash_point("switching")
        self._switched_at = time.monotonic()
        slots.switch(offer["version"], self.data["from"])
        crash_point("switched")
        log.info("OTA: %s now points at %s; restarting its pipelines", slots.link, offer["version"])
        self._reload(offer["name"])                 # an EdgeError here (bundle does not load) rolls back
        self.data.update(step="checking")
        self.journal.save(self.data)
        self.check = HealthCheck(self.managed[offer["name"]], self.settings.health_frames,
                                 self.settings.health_timeout)
        self.publish()
        crash_point("checking")

    def _reload(self, name: str) -> None:
        for worker in self.managed[name]:
            worker.reload(str(Slots(self.config.bundles_dir, name).link))
        self.on_reload()

    def _checking(self) -> None:
        if self.check is None:                      # cannot happen after recover(); be safe anyway
            return self._roll_back(INTERRUPTED)
        healthy, summary = self.check.verdict()
        if healthy is None:
            return self.publish(progress_only=True)
        if not healthy:
            return self._roll_back(f"health check failed: {summary}")
        self.data["switch_to_healthy_s"] = round(time.monotonic() - self._switched_at, 2)
        Slots(self.config.bundles_dir, self.data["offer"]["name"]).prune()
        self._end("done", None, note=f"healthy: {summary}")

    def _fail_or_roll_back(self, error: str) -> None:
        if self.step in ("switching", "checking"):
            self._roll_back(f"the new bundle does not run: {error}")
        else:
            self._end("failed", error)

    def _roll_back(self, reason: str) -> None:
        offer = self.data["offer"]
        log.warning("OTA: %s %s: %s; rolling back to %s", offer["name"], offer["version"], reason, self.data["from"])
        self.data.update(step="rolling_back", error=reason)
        self.journal.save(self.data)
        crash_point("rolling_back")
        slots = Slots(self.config.bundles_dir, offer["name"])
        slots.restore(self.data["from"], self.data.get("standby_before"))
        self.check = None
        try:
            self._reload(offer["name"])
        except EdgeError as err:                    # the old version was running a minute ago: say so loudly
            log.error("OTA: the previous bundle does not load either: %s", err)
        if self._switched_at is not None:
            self.data["rollback_s"] = round(time.monotonic() - self._switched_at, 2)
        slots.prune()
        self._end("rolled_back", reason)

    def _end(self, step: str, error: str | None, note: str | None = None) -> None:
        self.data.update(step=step, error=error, ended=time.time())
        if note:
            self.data["note"] = note
        self.journal.save(self.data)
        self.fetch, self.check = None, None
        shutil.rmtree(self.folder / "package", ignore_errors=True)
        log.log(logging.INFO if step == "done" else logging.WARNING, "OTA: %s %s %s%s",
                self.data["offer"]["name"], self.data["offer"]["version"], step, f": {error or note}")
        self.publish()

    # --- the retained state ----------------------------------------------------------------------------
    def publish(self, progress_only: bool = False) -> None:
        now = time.monotonic()
        if progress_only and now - self._published_at < PROGRESS_EVERY_S:
            return
        self._published_at = now
        offer = self.data.get("offer")
        progress = None
        if self.step == "downloading" and self.fetch is not None:
            progress = {"bytes": self.fetch.done_bytes, "total": offer["size"]}
        timings = {k: self.data[k] for k in ("download_s", "switch_to_healthy_s", "rollback_s") if k in self.data}
        bundles = {name: Slots(self.config.bundles_dir, name).describe() for name in sorted(self.managed)}
        message = contract.ota_message(
            device=self.device, group=self.config.group, state=self.step, bundles=bundles, progress=progress,
            offer={k: offer[k] for k in ("offer", "name", "version", "size", "sha256")} if offer else None,
            error=self.data.get("error") if self.step in ("failed", "rolled_back", "rolling_back") else None,
            timings=timings)
        self.publisher.announce(contract.ota_topic(self.device), contract.encode_message(message))


def _managed(config: "DaemonConfig", workers: dict[str, "PipelineWorker"]) -> dict[str, list["PipelineWorker"]]:
    """Bundle name -> the pipelines that open `<bundles_dir>/<name>/current` (only those take updates)."""
    managed: dict[str, list["PipelineWorker"]] = {}
    root = Path(config.bundles_dir)
    for worker in workers.values():
        path = Path(worker.config.bundle)
        if path.name == "current" and path.parent.parent == root:
            managed.setdefault(path.parent.name, []).append(worker)
    return managed
