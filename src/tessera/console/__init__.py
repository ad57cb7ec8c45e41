"""The approver console: server-rendered Jinja2 pages and one small script (no CDN)."""
