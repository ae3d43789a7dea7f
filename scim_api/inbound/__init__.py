"""Inbound HR provisioning: HR and badge systems push worker records into the directory.

A source (InboundSource) is an HR system, a badge system or a CSV import: its
own SCIM client token, a matching pair, attribute mappings, allowed actions,
scoping, a leaver policy and a disable/delete guard. Its records arrive as a
SCIM BulkRequest at /scim/v2/bulkUpload (Microsoft Entra's API-driven inbound
provisioning shape) or from a CSV file, are staged as an InboundJob with one
InboundRecord each, and are applied by Celery workers through the directory's
services, so every change reaches the outbox like any other write.
"""
