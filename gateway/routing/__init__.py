"""The failover policy: which target to try, when to retry, fail over, continue or give up.

No HTTP server code here (no aiohttp): a door hands the router a dialect-neutral
call and writes what comes back in its client's format.
"""
