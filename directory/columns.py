"""The SCIM names of the directory's single-valued columns: one vocabulary for every front door.

The directory's tables follow SCIM's core and enterprise User schemas and the
Group schema (RFC 7643 §4), so the names are SCIM's. The SCIM server
(scim_api.mapping) reads and writes these columns by them, and outbound
provisioning (provisioning.mapping, provisioning.sources) builds what targets
receive from them; keeping the tables here means a new column is named once.
"""

CORE_USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# SCIM attribute → User column, for the single-valued strings of the core User schema.
USER_COLUMNS: dict[str, str] = {
    "externalId": "external_id",
    "userName": "user_name",
    "displayName": "display_name",
    "nickName": "nick_name",
    "profileUrl": "profile_url",
    "title": "title",
    "userType": "user_type",
    "preferredLanguage": "preferred_language",
    "locale": "locale",
    "timezone": "timezone",
}
# `name` sub-attribute → User column.
NAME_COLUMNS: dict[str, str] = {
    "formatted": "name_formatted",
    "familyName": "family_name",
    "givenName": "given_name",
    "middleName": "middle_name",
    "honorificPrefix": "honorific_prefix",
    "honorificSuffix": "honorific_suffix",
}
# Enterprise User strings → User column (`manager` is a reference, mapped on its own).
ENTERPRISE_COLUMNS: dict[str, str] = {
    "employeeNumber": "employee_number",
    "costCenter": "cost_center",
    "organization": "organization",
    "division": "division",
    "department": "department",
}
