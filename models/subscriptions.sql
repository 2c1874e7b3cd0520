-- Each user's channel subscriptions and consent, for the Send Subscriptions action. The sample app
-- has no subscription table, so statuses are derived deterministically from the user id's digits:
-- every status spelling the destination accepts appears (true/false, subscribed/unsubscribed,
-- did_not_subscribe), plus an email group that is null for some users (left out of `groups`).
SELECT
    user_id,
    email,
    phone,
    CASE CAST(right(user_id, 1) AS INTEGER) % 4
        WHEN 0 THEN 'unsubscribed'
        WHEN 1 THEN 'did_not_subscribe'
        ELSE 'subscribed'
    END AS email_status,
    CASE WHEN CAST(right(user_id, 2) AS INTEGER) % 3 = 0 THEN 'true' ELSE 'false' END AS sms_status,
    CASE WHEN CAST(right(user_id, 1) AS INTEGER) % 2 = 0 THEN 'subscribed' ELSE 'unsubscribed' END AS newsletter_status,
    CASE WHEN CAST(right(user_id, 1) AS INTEGER) < 5 THEN 'true' END AS product_updates_status,
    json_object(
        'categoryPreferences',
        json_object(
            'Advertising', (CAST(right(user_id, 1) AS INTEGER) % 3 = 0),
            'Analytics', TRUE,
            'Functional', TRUE
        )
    ) AS consent,
    updated_at
FROM app.users
WHERE user_id IS NOT NULL
