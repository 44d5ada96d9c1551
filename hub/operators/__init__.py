"""What operators use: the admin API and page, queries over stored events, replay, reports,
the audit log and the OpenAPI document.
"""
