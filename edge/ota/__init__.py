"""Updates over the air: the operator offers a signed `.edgepkg` on a device's command topic, the device
fetches it (chunks over MQTT, or an HTTP(S) URL), verifies it, installs it into its standby slot, switches,
health-checks and rolls back on its own. docs/ota.md tells the whole story.

Device side: `config` (the daemon config's `ota:` section), `slots` (the A/B slots of a bundle), `journal`
(the step reached, for a power cut), `fetch` (chunks and URL), `health`, `agent` (the state machine the
daemon drives). Operator side: `operator` (offer and serve one device), `rollout` (a group, canaries first).
"""
