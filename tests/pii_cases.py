"""A labelled PII fixture: realistic positives (text, the secret that must disappear) and near-misses
(text that must come out unchanged), as they appear in chat logs, code questions and forum posts.

Sources of the formats: national numbering plans (ITU-T E.164, Ofcom's drama ranges), RFC 5952 (IPv6),
RFC 6531 (internationalised e-mail), RFC 7519 (JWT), the card networks' test numbers, and the example
credentials in AWS, GitHub, Slack, Google and Stripe documentation. Used by tests/test_pii.py and
bench/export.py.
"""

from __future__ import annotations

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
       "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi8c9Qm\nbTz2mr7SZiAMfQyuvBjM9Oi8c9"
       "QmAbC=\n-----END RSA PRIVATE KEY-----")

# (kind, text, the substring that must not survive redaction)
POSITIVES: list[tuple[str, str, str]] = [
    # e-mail
    ("email", "Contact me at jane.doe@example.com for details.", "jane.doe@example.com"),
    ("email", "my address: j.smith+newsletter@mail.co.uk (work)", "j.smith+newsletter@mail.co.uk"),
    ("email", "Schreib mir an müller@beispiel.de, danke!", "müller@beispiel.de"),
    ("email", "联系我: 用户@例子.广告", "用户@例子.广告"),
    ("email", "reach me at josé.garcía@correo.es tomorrow", "josé.garcía@correo.es"),
    ("email", "spam-safe: john [at] example [dot] com", "john [at] example [dot] com"),
    ("email", "mail alice (at) uni-heidelberg.de if it breaks", "alice (at) uni-heidelberg.de"),
    ("email", "CC: BOB_99@Company.ORG", "BOB_99@Company.ORG"),
    ("email", '<a href="mailto:info@shop.example.net">shop</a>', "info@shop.example.net"),
    ("email", "Привет, пишите на иван@почта.рф", "иван@почта.рф"),
    # phone numbers
    ("phone", "Ruf an: +49 30 123456", "123456"),
    ("phone", "Mon numéro : +33 1 23 45 67 89.", "45 67 89"),
    ("phone", "WhatsApp me on +91 98765 43210", "98765 43210"),
    ("phone", "my number is +14155552671, text first", "4155552671"),
    ("phone", "call (415) 555-2671 tonight", "555-2671"),
    ("phone", "office: +44 20 7946 0958", "7946 0958"),
    ("phone", "Tel. 020 7946 0958 (reception)", "7946 0958"),
    ("phone", "ring me on 07700 900123 after 6", "900123"),
    ("phone", "+1-202-555-0143 is my cell", "555-0143"),
    ("phone", "Tokyo office +81 3-1234-5678", "1234-5678"),
    ("phone", "bitte 0049 30 1234567 anrufen", "1234567"),
    ("phone", "meu celular +55 11 91234-5678", "91234-5678"),
    ("phone", "звоните +7 495 123-45-67", "123-45-67"),
    ("phone", "电话 +86 138 0013 8000", "0013 8000"),
    ("phone", "call me at 212-555-0187 or email", "555-0187"),
    # Chinese mobile numbers as written in China (no +86, no trunk 0), Russian numbers with the trunk 8, and
    # numbers typed in full-width forms by a Chinese or Japanese input method (WildChat: ~15% Chinese, ~10% Russian)
    ("phone", "我的手机号码是13800138000，有事联系", "13800138000"),
    ("phone", "my WeChat is 139 1234 5678", "1234 5678"),
    ("phone", "电话：186-1234-5678（工作日）", "1234-5678"),
    ("phone", "звоните 8 916 123-45-67 вечером", "123-45-67"),
    ("phone", "мой номер 8(916)1234567, пишите", "1234567"),
    ("phone", "手机：１３８００１３８０００", "８０００"),
    ("phone", "电话＋８６　１３８　００１３　８０００", "００１３"),
    ("credit_card", "卡号：４１１１ １１１１ １１１１ １１１１", "１１１１ １１１１"),
    ("email", "邮箱：ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ谢谢", "ａｎｎ＠ｅｘａｍｐｌｅ"),
    # IP addresses
    ("ipv4", "server at 192.168.10.254 is down", "192.168.10.254"),
    ("ipv4", "ssh root@203.0.113.42 -p 2222", "203.0.113.42"),
    ("ipv4", "my home IP is 81.2.69.160.", "81.2.69.160"),
    ("ipv4", "X-Forwarded-For: 198.51.100.7, 10.0.0.1", "198.51.100.7"),
    ("ipv6", "connect to fe80::1 on port 8080", "fe80::1"),
    ("ipv6", "link-local fe80::1ff:fe23:4567:890a%eth0 answered", "fe80::1ff:fe23:4567:890a"),
    ("ipv6", "host 2001:db8:85a3::8a2e:370:7334 is mine", "2001:db8:85a3::8a2e:370:7334"),
    ("ipv6", "listening on [2001:db8::5]:5432", "2001:db8::5"),
    ("ipv6", "mapped address ::ffff:192.0.2.128 in the log", "::ffff:192.0.2.128"),
    # cards (the networks' published test numbers)
    ("credit_card", "card 4111-1111-1111-1111 expires 04/27", "4111-1111-1111-1111"),
    ("credit_card", "Mastercard 5500 0000 0000 0004", "5500 0000 0000 0004"),
    ("credit_card", "amex 3782 822463 10005", "3782 822463 10005"),
    ("credit_card", "pay with 4012888888881881 please", "4012888888881881"),
    ("credit_card", "Discover 6011 1111 1111 1117", "6011 1111 1111 1117"),
    # secrets
    ("openai_key", "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx1234", "sk-proj-abcdefghijklmnopqrstuvwx1234"),
    ("hf_token", "token hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 here", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("aws_access_key", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("aws_secret_key", 'creds = ("AKIA...", "9drTJvcXLB89EXAMPLELB8923FB892xMFI/RgHu1")',
     "9drTJvcXLB89EXAMPLELB8923FB892xMFI/RgHu1"),
    ("github_token", "git clone https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/x/y",
     "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("github_token", "GH_TOKEN=github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJ",
     "github_pat_11ABCDEFG0abcdefghijkl"),
    ("bearer_token", "Authorization: Bearer abcDEF123456ghiJKL789.mnoPQR", "abcDEF123456ghiJKL789"),
    ("jwt", f"my session token is {JWT} why does it expire", JWT),
    ("jwt", f"Cookie: auth={JWT}; Path=/", JWT),
    ("slack_token", "SLACK_BOT_TOKEN=xoxb-2210535565-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-2210535565"),
    ("google_api_key", "maps key AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI in the html",
     "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"),
    ("stripe_key", "stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("private_key", f"here is my key:\n{PEM}\nwhy won't ssh take it?", "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi8c9Qm"),
    ("private_key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGVx1c0BCADd8Zq\n=Ab3x\n"
     "-----END PGP PRIVATE KEY BLOCK-----", "lQOYBGVx1c0BCADd8Zq"),
    ("slack_token", "webhook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX fails",
     "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("stripe_key", "STRIPE_WEBHOOK_SECRET=whsec_5f8a1b2c3d4e5f6a7b8c9d0e1f2a3b4c", "whsec_5f8a1b2c3d4e5f6a7b8c9d0e1f2a3b4c"),
    # HTTP Basic credentials: base64 of "user:password" ("Aladdin:open sesame" is RFC 7617's example)
    ("basic_auth", "curl -H 'Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==' https://api.example.com",
     "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
    ("basic_auth", 'headers = {"Authorization": "Basic YWRtaW46aHVudGVyMg"}', "YWRtaW46aHVudGVyMg"),
    ("gitlab_token", "git clone https://oauth2:glpat-xR4nD0mT0k3nV4lu3zzz@gitlab.com/g/p.git", "glpat-xR4nD0mT0k3nV4lu3zzz"),
    ("gitlab_token", "CI_JOB_TOKEN glrt-t1_AbCdEfGhIjKlMnOpQrSt.01.1j0c2x9k3 in .gitlab-ci.yml",
     "t1_AbCdEfGhIjKlMnOpQrSt.01.1j0c2x9k3"),
    ("npm_token", "//registry.npmjs.org/:_authToken=npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
     "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    ("pypi_token", "password = pypi-AgEIcHlwaS5vcmcCJGFiY2RlZjAxLTIzNDUtNjc4OS1hYmNkLWVmMDEyMzQ1Njc4OQ",
     "AgEIcHlwaS5vcmcCJGFiY2RlZjAxLTIzNDUtNjc4OS1hYmNk"),
    ("sendgrid_key", "SENDGRID_API_KEY='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'",
     "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"),
    ("url_password", "DATABASE_URL=postgres://app:s3cr3tP4ss@10.0.0.5:5432/db", "s3cr3tP4ss"),
    ("url_password", "r = redis.from_url('redis://:hunter2x@localhost:6379/0')", "hunter2x"),
    # IBANs (the examples of the ECBS IBAN registry), written grouped or compact
    ("iban", "Bitte überweisen an DE89 3704 0044 0532 0130 00 bis Freitag", "3704 0044 0532 0130 00"),
    ("iban", "my IBAN is GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ("iban", "IBAN: FR14 2004 1010 0505 0001 3M02 606 EUR", "2004 1010 0505 0001 3M02 606"),
    # a person's account folder in a pasted path (as in WildChat tracebacks and file:/// URLs)
    ("home_path", 'File "/home/jeongmin/project/train.py", line 12, in <module>', "jeongmin"),
    ("home_path", "open file:///C:/Users/Jane%20Doe/Desktop/index.html in the browser", "Jane%20Doe"),
    ("home_path", r"df = pd.read_csv('C:\\Users\\Franco\\Documents\\data.csv')", "Franco"),
    ("home_path", r"PS C:\Users\Alexander\AppData\Local> python app.py", "Alexander"),
    ("home_path", "ls /Users/maria.lopez/Library/Caches", "maria.lopez"),
    # a Chinese resident identity number (GB 11643's example; one made up with a valid check), as a WildChat user
    # pasted one into a transcript to translate
    ("cn_resident_id", "身份证号：11010519491231002X\n姓名：张三", "11010519491231002X"),
    ("cn_resident_id", "ID Number: 44030419900307123X\nName: Li Hua", "44030419900307123X"),
    ("cn_resident_id", "我的身份证号码是44030419900307123X，请核对", "44030419900307123X"),
]

# Text that looks like PII to a careless pattern and must come out unchanged.
NEAR_MISSES: list[str] = [
    "upgrade to version 1.2.3.4 of the library",
    "release 2.10.1.0 fixed the crash",
    "netmask 255.255.255.0 on eth0",
    "subnet mask 255.255.240.0 is a /20",
    "the SNMP OID 1.3.6.1.4.1.311 belongs to Microsoft",
    "Chrome 120.0.6099.109 on Windows",
    "at 12:30:45 use std::vector",
    "C++ namespaces like a::b::c are fine",
    "timecode 01:02:03:04 in the edit",
    "order 123456789 costs 1234.50",
    "ISBN 978-3-16-148410-0",
    "the meeting is on 2023-10-05 at 14:00",
    "dates 05/10/2023 and 10.05.2023 both appear",
    "see pages 357-362 of the 2020 volume",
    "coordinates 48.8566, 2.3522 are Paris",
    "pi is 3.14159 26535 89793 23846",
    "invoice no. 2024-000123-77",
    "EAN barcode 4006381333931 on the box",
    "timestamp 1700000000000 in milliseconds",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "git commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "use icon@2x.png for retina screens",
    "the @decorator syntax in Python",
    "mail to user@localhost works in tests",
    "redis listens on 127.0.0.1:6379 by default",
    "curl http://[::1]:8080/health",
    "uvicorn app:app --host 0.0.0.0 --port 8000",
    "sk-short and hf_short are not keys",
    "see section 3.2.1 of the book",
    "email me at work",
    "the ratio was 1:2:3:4",
    "from 1999-2000 to 2001-2002",
    "ZIP code 94105-1234",
    "temperature -40.5 to 120.25 degrees",
    "India's salary of Rs. 1,50,000 per month",
    "card ending in 1111",
    "card 4111 1111 1111 1112 fails the checksum",
    "a bearer of bad news",
    "a JWT always starts with eyJ",
    "AKIA is the prefix of AWS access keys",
    "doi:10.1000/182",
    "Base64 of hello is aGVsbG8=",
    "product code 12-345-678-90",
    "lottery numbers 04 15 23 42 08 16",
    "population grew from 1 234 567 to 2 345 678",
    "the class ThisIsAVeryLongJavaClassNameForTesting42 is too long",
    "matrix [[1, 2], [3, 4]] times 10",
    # basic_auth: the word "Basic" in prose and base64 that is not "user:password"
    "Basic authentication sends credentials with every request",
    "Use HTTP Basic auth, not Basic digest. BASIC programming in 1985.",
    "Authorization: Basic <base64(user:password)>",
    "Authorization: Basic aGVsbG8gd29ybGQ=",
    # base64 in data URIs, git SHAs, UUIDs, CSS colours
    '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==">',
    "fixed in a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 and f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "glpat- tokens and npm_ tokens look like glpat-<20 chars>",
    # URL passwords that are placeholders, and ports
    "rtsp://username:password@your_camera_ip/stream",
    "mysql://root:${DB_PASS}@localhost/app and postgres://user:<password>@host/db",
    "open http://example.com:8080/path or ftp://ftp.example.org:21/pub",
    # IBAN-like strings: a wrong check digit, a wrong length, an unknown country, a product code
    "IBAN DE89 3704 0044 0532 0130 01 has a typo",
    "account GB82WEST1234569876543 is one digit short",
    "part number XX12 3456 7890 1234 56 in stock",
    "SKU AB12CD34EF56GH78 ships today",
    # home folders of a role or a placeholder, and /home or /users in a URL or an API path
    "cd /home/ubuntu/app && ./run.sh",
    "the runner checks out to /home/runner/work/repo",
    "copy it to C:\\Users\\Public\\Documents",
    "GET /api/users/42 returns the profile",
    "see https://example.com/home/about for details",
    # 18-digit numbers that are no resident id: a snowflake id and an order number (no valid birth date), and a
    # real id's digits with a wrong check character
    "tweet 466981950876549120 was deleted",
    "订单号：202310011234567890，请保存",
    "身份证号：110105194912310021",
    # 11-digit runs that are no Chinese mobile, most as found in the real WildChat and Arena-Hard text: a hash holding
    # 1[3-9] and 9 digits, pi's digits after the point, a prefix no mobile uses (142, 12, 10), epoch milliseconds, a
    # number glued to letters in code; digit groups after 8 that are no Russian number; full-width signs around sums
    "9d668b3eeb774be9abb14208324033b1 and 13812345678abc",
    "pi is approximately 3.14159265359",
    "ticket 14208324033, order 12345678901, user 10012345678",
    "created_at 1701388800000 (epoch ms)",
    "price 8 000 / 2 and the range 800-1000, step 8 - 24",
    "全角的小数（5000-(-500)）和卡号前缀（623190005200",
]
