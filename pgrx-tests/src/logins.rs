//! Generated login messages of the take-home's shape: realistic values, a few malformed bodies.

/// A small deterministic generator (xorshift), so runs are repeatable without a rand crate.
pub struct Generator(u64);

const DEVICES: [&str; 2] = ["android", "ios"];
const LOCALES: [&str; 8] = ["RU", "PH", "ID", "FR", "PT", "US", "BR", "CN"];

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One valid login as Python's json.dumps would send it; `locale` None is JSON null.
    pub fn login(&mut self, locale: bool) -> String {
        let uuid = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            self.next() as u32,
            self.below(1 << 16),
            self.below(1 << 12),
            0x8000 | self.below(1 << 14),
            self.next() & 0xffff_ffff_ffff
        );
        let version = if self.below(2) == 0 {
            format!("{}.{}.{}", self.below(4), self.below(10), self.below(10))
        } else {
            format!("{}.{}", self.below(4), self.below(100))
        };
        let ip = format!("{}.{}.{}.{}", 1 + self.below(254), self.below(256), self.below(256), self.below(256));
        let device_id = format!("{:03}-{:02}-{:04}", self.below(1000), self.below(100), self.below(10000));
        let locale = if locale {
            format!("\"{}\"", LOCALES[self.below(LOCALES.len() as u64) as usize])
        } else {
            "null".to_owned()
        };
        let device = DEVICES[self.below(2) as usize];
        format!(
            "{{\"user_id\": \"{uuid}\", \"app_version\": \"{version}\", \"device_type\": \"{device}\", \
             \"ip\": \"{ip}\", \"locale\": {locale}, \"device_id\": \"{device_id}\"}}"
        )
    }
}

/// `count` valid logins, each with a locale.
pub fn valid(count: usize, seed: u64) -> Vec<String> {
    let mut g = Generator::new(seed);
    (0..count).map(|_| g.login(true)).collect()
}

/// The take-home's malformed record.
pub const MALFORMED: &str = r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#;

/// `count` messages like the take-home's queue: the malformed record at index 12 (when there
/// are that many) and a null locale in 29 of every 99 valid ones.
pub fn take_home_like(count: usize, seed: u64) -> Vec<String> {
    let mut g = Generator::new(seed);
    let mut valid = 0;
    (0..count)
        .map(|i| {
            if i == 12 {
                return MALFORMED.to_owned();
            }
            valid += 1;
            g.login((valid - 1) % 99 >= 29)
        })
        .collect()
}

/// Where the string value of `key` lies in a generated body.
fn span(body: &str, key: &str) -> std::ops::Range<usize> {
    let prefix = format!("\"{key}\": \"");
    let start = body.find(&prefix).unwrap_or_else(|| panic!("{key} in a generated login")) + prefix.len();
    start..start + body[start..].find('"').unwrap()
}

/// The string value of `key` in a generated body, e.g. the ip to look a row up by.
pub fn field<'a>(body: &'a str, key: &str) -> &'a str {
    &body[span(body, key)]
}

/// The body with the string value of `key` replaced by `value`.
pub fn with_field(body: &str, key: &str, value: &str) -> String {
    let at = span(body, key);
    format!("{}{value}{}", &body[..at.start], &body[at.end..])
}

/// `count` bodies that must each become a dead letter, cycling through every kind of garbage a
/// queue can hold. Rarely (they are large) a 100,000-level nested array or a ~1 MiB string.
pub fn hostile(count: usize, seed: u64) -> Vec<String> {
    let mut g = Generator::new(seed);
    (0..count)
        .map(|i| {
            let login = g.login(true);
            match (i % 997, i % 14) {
                (500, _) => format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
                (996, _) => format!("{{\"user_id\": \"{}\"}}", "u".repeat(1_048_000)),
                (_, 0) => String::new(),
                (_, 1) => "{\"user_id\": \"unterminated".to_owned(),
                (_, 2) => "[1, 2, 3]".to_owned(),
                (_, 3) => format!("{}{}", "{\"a\": ".repeat(200), "}".repeat(200)),
                (_, 4) => with_field(&login, "user_id", "a\\u0000b"),
                (_, 5) => with_field(&login, "ip", "\\ud800"),
                (_, 6) => login.replace(&format!("\"{}\"", field(&login, "ip")), "5"),
                (_, 7) => login.replace(&format!("\"{}\"", field(&login, "device_id")), "{\"a\": 1}"),
                (_, 8) => with_field(&login, "device_type", &"d".repeat(33)),
                (_, 9) => login.replacen('{', "{\"user_id\": \"dup\", ", 1),
                (_, 10) => format!("\u{FEFF}{login}"),
                (_, 11) => ["null", "true", "\"a string\"", "42"][i / 14 % 4].to_owned(),
                (_, 12) => login.replace(&format!("\"{}\"", field(&login, "app_version")), "[2, 3]"),
                _ => login.replace(&format!("\"{}\"", field(&login, "user_id")), "null"),
            }
        })
        .collect()
}
