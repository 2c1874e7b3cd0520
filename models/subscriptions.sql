-- Each user's channel subscriptions and consent, for the Send Subscriptions action. The sample app
-- has no subscription table, so statuses are derived deterministically from a hash of the user id
-- (any id works): every status spelling the destination accepts appears (true/false,
-- subscribed/unsubscribed, did_not_subscribe), plus an email group that is null for some users
-- (left out of `groups`). Replace the derivations by your subscription columns.
WITH u AS (
    SELECT user_id, email, phone, updated_at, CAST(abs(hash(user_id)) % 100 AS INTEGER) AS bucket
    FROM app.users
    WHERE user_id IS NOT NULL
)
SELECT
    user_id,
    email,
    phone,
    CASE bucket % 4
        WHEN 0 THEN 'unsubscribed'
        WHEN 1 THEN 'did_not_subscribe'
        ELSE 'subscribed'
    END AS email_status,
    CASE WHEN bucket % 3 = 0 THEN 'true' ELSE 'false' END AS sms_status,
    CASE WHEN bucket % 2 = 0 THEN 'subscribed' ELSE 'unsubscribed' END AS newsletter_status,
    CASE WHEN bucket < 50 THEN 'true' END AS product_updates_status,
    json_object(
        'categoryPreferences',
        json_object('Advertising', (bucket % 5 = 0), 'Analytics', TRUE, 'Functional', TRUE)
    ) AS consent,
    updated_at
FROM u
