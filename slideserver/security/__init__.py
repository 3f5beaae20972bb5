"""Authentication, roles, de-identification and the audit trail (DESIGN section 6).

- :mod:`~slideserver.security.principals`: who is asking, and the roles.
- :mod:`~slideserver.security.tokens` / :mod:`~slideserver.security.oidc`: bearer credentials.
- :mod:`~slideserver.security.session`: the viewer's signed cookie, CSRF rules.
- :mod:`~slideserver.security.deidentify`: researcher views, by allow-list.
- :mod:`~slideserver.security.audit`: the append-only audit trail (own migration chain).

The HTTP side (the route -> roles table and the pure-ASGI authentication and route guard) lives in
:mod:`slideserver.api.policy` and :mod:`slideserver.api.auth`: only the API layer knows HTTP.
"""

from slideserver.security.authority import Security, principal_of
from slideserver.security.principals import ANONYMOUS, ROLES, Principal

__all__ = [
    "ANONYMOUS",
    "ROLES",
    "Principal",
    "Security",
    "principal_of",
]
