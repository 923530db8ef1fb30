# A small but real OAuth2 authorization server for ivrauth's tests (authlib 1.9 + Flask 3),
# adapted from shared/recipes/oauth2-authlib-server.py.
#
#   python server.py [--opaque]
#
# Binds 127.0.0.1 on a free port and prints "LISTENING <port>" on stdout once it accepts
# connections. The issuer is http://127.0.0.1:<port>.
#
# What it serves:
#   POST  /token                      password and client_credentials grants (client_secret_basic
#                                     or client_secret_post); RS256 JWT access tokens (RFC 9068,
#                                     aud = client id), or random opaque tokens with --opaque
#   GET   /jwks.json                  the public signing key (fresh RSA key per start)
#   GET   /.well-known/openid-configuration
#   POST  /introspect                 RFC 7662, client-authenticated
#   GET   /api/v2/users?q=<query>     management user search (bearer token from the
#                                     client_credentials grant with scope users:read)
#   PATCH /api/v2/users/<user_id>     management update, {"password": ...} (scope users:write)
#   GET   /test/stats                 tokens issued, per "<client_id> <grant_type>"
#
# The search query syntax is a small Lucene-like language, evaluated over the user table:
#   query  := clause (("AND" | "OR" | <nothing>) clause)*      AND binds tighter than OR
#   clause := field ":" value
#   field  := a dotted path into the user object, e.g. app_metadata.account_number
#   value  := '"' phrase '"'    exact match; backslash escapes the next character
#           | bare word         up to whitespace; backslash escapes; unescaped * and ? are
#                               wildcards
# Anything else is a 400. So `app_metadata.account_number:10001 OR username:*` finds every
# user, and a client must quote and escape what it puts into a query.
import argparse
import re
import secrets
import sys
import threading
import time

from flask import Flask, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import grants, ClientMixin, TokenMixin
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator

parser = argparse.ArgumentParser()
parser.add_argument("--opaque", action="store_true", help="issue opaque tokens, not JWTs")
ARGS = parser.parse_args()

KEY = RSAKey.generate_key(
    2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"}, private=True
)
LOCK = threading.Lock()

# The user table, Auth0-like. Passwords live beside it, never in search results.
USERS = [
    {
        "user_id": "auth0|10001",
        "username": "10001",
        "name": "Ada Lovelace",
        "given_name": "Ada",
        "phone_number": "+15550100001",
        "phone_verified": True,
        "email": "ada@example.test",
        "email_verified": True,
        "blocked": False,
        "app_metadata": {"account_number": "10001"},
    },
    {
        "user_id": "auth0|10002",
        "username": "10002",
        "name": "Grace Hopper",
        "given_name": "Grace",
        "phone_number": "+15550100002",
        "phone_verified": False,
        "email": "grace@example.test",
        "email_verified": True,
        "blocked": False,
        "app_metadata": {"account_number": "10002"},
    },
    {
        "user_id": "auth0|10003",
        "username": "10003",
        "name": "Katherine Johnson",
        "given_name": "Katherine",
        "phone_number": "+15550100003",
        "phone_verified": True,
        "email": "katherine@example.test",
        "email_verified": False,
        "blocked": False,
        "app_metadata": {"account_number": "10003"},
    },
    {
        "user_id": "auth0|10009",
        "username": "10009",
        "name": "Blocked Person",
        "blocked": True,
        "app_metadata": {"account_number": "10009"},
    },
]
PASSWORDS = {"10001": "2468", "10002": "1357", "10003": "8642", "10009": "1111"}
STATS = {}
TOKENS = {}  # access token -> Token


class Client(ClientMixin):
    def __init__(self, cid, secret, grant_types, scopes, expires_in=3600):
        self.cid, self.secret, self.gts = cid, secret, grant_types
        self.scopes, self.expires_in = scopes, expires_in

    def get_client_id(self):
        return self.cid

    def check_client_secret(self, s):
        return secrets.compare_digest(s, self.secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_grant_type(self, gt):
        return gt in self.gts

    def get_allowed_scope(self, scope):
        if not scope:
            return " ".join(self.scopes)
        return " ".join(s for s in scope.split() if s in self.scopes)

    def check_redirect_uri(self, uri):
        return False

    def get_default_redirect_uri(self):
        return None


CLIENTS = {
    c.cid: c
    for c in [
        Client("ivrauth-mgmt", "mgmt-secret", ["client_credentials"], ["users:read", "users:write"]),
        Client("ivrauth-login", "login-secret", ["password"], ["openid", "profile"]),
        # For caching tests: their own counters, and tokens that expire in 2 seconds.
        Client("ivrauth-mgmt-probe", "probe-secret", ["client_credentials"], ["users:read", "users:write"]),
        Client("ivrauth-mgmt-short", "short-secret", ["client_credentials"], ["users:read"], expires_in=2),
        # Management tokens without the search scope.
        Client("ivrauth-noscope", "noscope-secret", ["client_credentials"], ["other"]),
    ]
}


class User:
    def __init__(self, record):
        self.record = record

    def get_user_id(self):
        return self.record["user_id"]


class Token(TokenMixin):
    def __init__(self, client_id, grant_type, user, scope, expires_in):
        self.client_id, self.grant_type, self.user = client_id, grant_type, user
        self.scope, self.issued_at = scope, int(time.time())
        self.expires_at = self.issued_at + int(expires_in)

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_at - self.issued_at

    def is_expired(self):
        return time.time() >= self.expires_at

    def is_revoked(self):
        return False

    def get_user(self):
        return self.user


AUTH_METHODS = ["client_secret_basic", "client_secret_post"]  # authlib's default is basic only


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def authenticate_user(self, username, password):
        with LOCK:
            stored = PASSWORDS.get(username)
            record = next((u for u in USERS if u["username"] == username), None)
        # An empty password never matches.
        if record and stored and password and not record.get("blocked"):
            if secrets.compare_digest(stored, password):
                return User(record)
        return None


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


def expires(client, grant_type):
    return client.expires_in


class JWTGen(JWTBearerTokenGenerator):
    def get_jwks(self):
        return KeySet([KEY])

    def get_audiences(self, client, user, scope):
        return client.get_client_id()

    def get_extra_claims(self, client, grant_type, user, scope):
        if user:
            return {"preferred_username": user.record["username"]}
        return {}


def save_token(token, req):
    grant_type = request.form.get("grant_type", "")
    client_id = req.client.get_client_id()
    with LOCK:
        key = f"{client_id} {grant_type}"
        STATS[key] = STATS.get(key, 0) + 1
        TOKENS[token["access_token"]] = Token(
            client_id, grant_type, req.user, token.get("scope", ""), token["expires_in"]
        )


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string, token_type_hint):
        with LOCK:
            return TOKENS.get(token_string)

    def check_permission(self, token, client, request):
        return client.get_client_id() in ("ivrauth-mgmt", "ivrauth-login")

    def introspect_token(self, token):
        payload = {
            "active": True,
            "client_id": token.client_id,
            "token_type": "Bearer",
            "scope": token.scope,
            "aud": token.client_id,
            "iss": ISS,
            "exp": token.expires_at,
            "iat": token.issued_at,
        }
        if token.user:
            payload["sub"] = token.user.get_user_id()
            payload["username"] = token.user.record["username"]
        return payload


class MgmtTokenValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        with LOCK:
            token = TOKENS.get(token_string)
        # Only machine tokens (client_credentials) may use the management API.
        if token and token.grant_type == "client_credentials":
            return token
        return None


class QueryError(Exception):
    pass


def parse_query(q):
    """Returns a list of OR-groups, each a list of (path, matcher) AND-clauses."""
    i, n = 0, len(q)
    groups, current, pending_op = [], [], None
    while True:
        while i < n and q[i].isspace():
            i += 1
        if i >= n:
            break
        for op in ("AND", "OR"):
            end = i + len(op)
            if q.startswith(op, i) and (end >= n or q[end].isspace()):
                if pending_op or not current:
                    raise QueryError("operator out of place")
                pending_op, i = op, end
                break
        else:
            colon = q.find(":", i)
            if colon <= i:
                raise QueryError("expected field:value")
            path = q[i:colon]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", path):
                raise QueryError("bad field name")
            i = colon + 1
            if i < n and q[i] == '"':
                i += 1
                value = []
                while True:
                    if i >= n:
                        raise QueryError("unterminated phrase")
                    c = q[i]
                    if c == "\\":
                        if i + 1 >= n:
                            raise QueryError("dangling escape")
                        value.append(q[i + 1])
                        i += 2
                    elif c == '"':
                        i += 1
                        break
                    else:
                        value.append(c)
                        i += 1
                exact = "".join(value)
                matcher = lambda v, exact=exact: v == exact
            else:
                pattern = []
                while i < n and not q[i].isspace():
                    c = q[i]
                    if c == "\\":
                        if i + 1 >= n:
                            raise QueryError("dangling escape")
                        pattern.append(re.escape(q[i + 1]))
                        i += 2
                    elif c == "*":
                        pattern.append(".*")
                        i += 1
                    elif c == "?":
                        pattern.append(".")
                        i += 1
                    elif c in '"():':
                        raise QueryError("unescaped special character")
                    else:
                        pattern.append(re.escape(c))
                        i += 1
                if not pattern:
                    raise QueryError("empty value")
                rx = re.compile("".join(pattern), re.DOTALL)
                matcher = lambda v, rx=rx: rx.fullmatch(v) is not None
            if pending_op == "OR":
                groups.append(current)
                current = []
            pending_op = None
            current.append((path.split("."), matcher))
    if pending_op or not current:
        raise QueryError("incomplete query")
    groups.append(current)
    return groups


def field(user, path):
    v = user
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int)):
        return str(v)
    return None


def matches(user, groups):
    def clause_ok(path, matcher):
        v = field(user, path)
        return v is not None and matcher(v)

    return any(all(clause_ok(p, m) for p, m in group) for group in groups)


app = Flask(__name__)
server = AuthorizationServer(app, query_client=CLIENTS.get, save_token=save_token)
server.register_grant(PasswordGrant)
server.register_grant(ClientCredentialsGrant)
server.register_endpoint(Introspection)
require_oauth = ResourceProtector()
require_oauth.register_token_validator(MgmtTokenValidator())


@app.post("/token")
def token():
    return server.create_token_response()


@app.post("/introspect")
def introspect():
    return server.create_endpoint_response(Introspection.ENDPOINT_NAME)


@app.get("/jwks.json")
def jwks():
    return jsonify({"keys": [KEY.as_dict(private=False)]})


@app.get("/.well-known/openid-configuration")
def discovery():
    return jsonify(
        issuer=ISS,
        token_endpoint=f"{ISS}/token",
        jwks_uri=f"{ISS}/jwks.json",
        introspection_endpoint=f"{ISS}/introspect",
        grant_types_supported=["password", "client_credentials"],
        token_endpoint_auth_methods_supported=AUTH_METHODS,
    )


@app.get("/api/v2/users")
@require_oauth("users:read")
def search_users():
    q = request.args.get("q", "")
    try:
        groups = parse_query(q)
    except QueryError as e:
        return jsonify(error="invalid_query", message=str(e)), 400
    with LOCK:
        found = [dict(u) for u in USERS if matches(u, groups)]
    return jsonify(found)


@app.patch("/api/v2/users/<path:user_id>")
@require_oauth("users:write")
def update_user(user_id):
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"password"}:
        return jsonify(error="invalid_body", message="expected {\"password\": ...}"), 400
    password = body["password"]
    if not isinstance(password, str) or len(password) < 4:
        return jsonify(error="password_strength", message="password too weak"), 400
    with LOCK:
        user = next((u for u in USERS if u["user_id"] == user_id), None)
        if user is None:
            return jsonify(error="not_found"), 404
        PASSWORDS[user["username"]] = password
        return jsonify(dict(user))


@app.get("/test/stats")
def stats():
    with LOCK:
        return jsonify(tokens_issued=dict(STATS))


if __name__ == "__main__":
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    PORT = http.server_port
    ISS = f"http://127.0.0.1:{PORT}"
    if ARGS.opaque:
        generator = BearerTokenGenerator(
            access_token_generator=lambda client, grant_type, user, scope: secrets.token_urlsafe(32),
            expires_generator=expires,
        )
    else:
        generator = JWTGen(issuer=ISS, expires_generator=expires)
    server.register_token_generator("default", generator)
    print(f"LISTENING {PORT}", flush=True)
    http.serve_forever()
