-- One row per user–account pair, with the account's firmographics: the Group call that
-- attaches a user to an account profile and keeps the account's traits current.
SELECT
    u.user_id || ':' || a.account_id AS membership_id,
    u.user_id,
    a.account_id,
    a.name,
    a.industry,
    a.employees,
    a.plan,
    greatest(u.updated_at, a.updated_at) AS updated_at
FROM app.users AS u
JOIN app.accounts AS a ON a.account_id = u.account_id
WHERE u.user_id IS NOT NULL
