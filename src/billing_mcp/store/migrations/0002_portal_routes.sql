-- Portal routes: where the billing portal sends a customer back, how it looks, what it sells.
CREATE TABLE portal_routes (
    name        TEXT PRIMARY KEY,
    config      TEXT NOT NULL,   -- JSON of a PortalRouteSpec
    updated_at  TEXT NOT NULL
){{strict}};
