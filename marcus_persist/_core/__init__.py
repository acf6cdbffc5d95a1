"""The actor machinery: mailboxes, the batching actor, atomic file commits.

Nothing in here knows about assignments, audit logs or any other data type.
"""
