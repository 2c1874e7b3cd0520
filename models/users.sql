-- Users exactly as the app stores them. No deduplication here: a duplicated or null key is the
-- sync's to reject and report (see _segment_profiles.failed_records), not the model's to hide.
SELECT
    user_id,
    email,
    first_name,
    last_name,
    phone,
    plan,
    account_id,
    created_at,
    updated_at
FROM app.users
