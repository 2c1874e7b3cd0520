-- One row per user, cleaned for Segment: the identify mapping in ../../segment/upstream.yml reads it.
select
    'u_' || cast(id as varchar) as user_id,
    lower(trim(email)) as email,
    first_name || ' ' || last_name as full_name,
    plan
from {{ ref('raw_users') }}
