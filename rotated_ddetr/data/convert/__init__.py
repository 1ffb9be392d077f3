"""Dataset converters: other annotation formats <-> the DOTA layout (`common.py` holds what they share)."""
