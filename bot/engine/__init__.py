"""The pure decision engine: Post in, Decision out; no I/O and no platform imports."""
from bot.engine.decision import Decision, Post
from bot.engine.engine import Engine, assess

__all__ = ["Decision", "Engine", "Post", "assess"]
