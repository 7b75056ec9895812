"""discord.py extensions: members' side (listeners), case cards (review), slash commands, and rendering."""
