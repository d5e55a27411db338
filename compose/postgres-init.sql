-- The analytics step's database beside `payments` (created by POSTGRES_DB).
CREATE DATABASE analytics;
