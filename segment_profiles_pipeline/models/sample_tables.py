"""The sample warehouse's table names, apart from its generator (``sample_data.py``).

Declaring the sample tables' assets at load needs only their names; the generator imports numpy
and pyarrow (~0.2 s), which only a run that creates the tables should pay.
"""

SOURCE_TABLES = (
    "app.users",
    "app.accounts",
    "flex.flex_engagement_initiated",
    "flex.flex_engagement_completed",
    "shop.order_completed",
)
