"""Authentication, roles, de-identification and the audit trail (DESIGN section 6).

- :mod:`~slideserver.security.principals`: who is asking, and the roles.
- :mod:`~slideserver.security.policy`: the route -> roles table, checked when the app is built.
- :mod:`~slideserver.security.tokens` / :mod:`~slideserver.security.oidc`: bearer credentials.
- :mod:`~slideserver.security.session`: the viewer's signed cookie, CSRF rules.
- :mod:`~slideserver.security.deidentify`: researcher views, by allow-list.
- :mod:`~slideserver.security.audit`: the append-only audit trail (own migration chain).
- :mod:`~slideserver.security.middleware`: pure-ASGI authentication and the route guard.
"""

from slideserver.security.policy import POLICY, PolicyError, Rule, secure_routes
from slideserver.security.principals import ANONYMOUS, ROLES, Principal
from slideserver.security.service import Security, principal_of

__all__ = [
    "ANONYMOUS",
    "POLICY",
    "ROLES",
    "PolicyError",
    "Principal",
    "Rule",
    "Security",
    "principal_of",
    "secure_routes",
]
