"""The moderators' web dashboard and sandbox channel (aiohttp; `caveat serve`)."""
