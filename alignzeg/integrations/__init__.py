"""Optional integrations with other engines; each module imports its engine only when used.

- ``alignzeg.integrations.ray``: segment a Ray Dataset on a pool of actors (``pip install "alignzeg[ray]"``).
"""
