"""Names the dashboard shares with storage: the sandbox is a platform of its own (posts made on the dashboard).

The dashboard's read queries live in bot/storage/dashboard.py: nothing outside bot/storage writes SQL.
"""
SANDBOX = "sandbox"
