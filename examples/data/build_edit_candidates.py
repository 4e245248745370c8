"""Candidate knowledge-edit requests (CounterFact-style) about common-knowledge facts, written for this
project (CC0). `bench/edit_facts_check.py` scores them on SmolLM2-135M-Instruct and keeps the facts the model
knows (examples/data/edits/{dev,heldout,mass}.jsonl).

    python examples/data/build_edit_candidates.py   # writes examples/data/edits/candidates.jsonl

Each relation has a main prompt, plain paraphrase templates, generation prompts and facts `subject|object`
(`*subject` takes the article "the": `{T}` / `{t}` in a template become "The " / "the " for it). A request:
- `target_true` the fact's object, `target_new` another object of the same relation (seeded choice; never a
  token-prefix of the true object or the reverse: the check script verifies on the tokenizer),
- `paraphrases`: two plain rephrasings and one rephrasing behind an unrelated short sentence (CounterFact's
  style),
- `neighborhood`: prompts about other subjects whose object is the same string (any relation; up to 10,
  the check script keeps those the model answers right),
- `generation`: two open prompts about the subject.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).parent

# (name, main prompt, [plain paraphrases..., one more used behind a prefix sentence], generation prompts, facts)
RELATIONS: list[tuple[str, str, list[str], list[str], str]] = [
    (
        "capital",
        "The capital of {t}{} is",
        [
            "{T}{}'s capital city is",
            "The capital city of {t}{} is",
            "The seat of the government of {t}{} is the city of",
        ],
        ["{T}{}'s capital is known for", "People who visit the capital of {t}{} often"],
        """France|Paris Germany|Berlin Italy|Rome Spain|Madrid Japan|Tokyo China|Beijing Russia|Moscow
        Egypt|Cairo Greece|Athens Portugal|Lisbon Austria|Vienna Ireland|Dublin Norway|Oslo Sweden|Stockholm
        Finland|Helsinki Denmark|Copenhagen Poland|Warsaw Hungary|Budapest *Netherlands|Amsterdam
        Belgium|Brussels Thailand|Bangkok South_Korea|Seoul Kenya|Nairobi Argentina|Buenos_Aires Peru|Lima
        Mexico|Mexico_City Cuba|Havana Canada|Ottawa India|New_Delhi Iran|Tehran Iraq|Baghdad
        Indonesia|Jakarta *Philippines|Manila Vietnam|Hanoi Chile|Santiago Venezuela|Caracas Ukraine|Kyiv
        Czechia|Prague Turkey|Ankara Australia|Canberra Switzerland|Bern Romania|Bucharest Bulgaria|Sofia
        Serbia|Belgrade Croatia|Zagreb Scotland|Edinburgh England|London Wales|Cardiff Morocco|Rabat
        Ethiopia|Addis_Ababa Nigeria|Abuja Pakistan|Islamabad Bangladesh|Dhaka Syria|Damascus
        Lebanon|Beirut Afghanistan|Kabul Nepal|Kathmandu Iceland|Reykjavik Colombia|Bogotá
        Malaysia|Kuala_Lumpur Saudi_Arabia|Riyadh""",
    ),
    (
        "landmark_city",
        "{T}{} is located in the city of",
        ["{T}{} stands in the city of", "{T}{} can be found in the city of", "Tourists visit {t}{} in the city of"],
        ["{T}{} is", "The history of {t}{}"],
        """*Eiffel_Tower|Paris *Louvre|Paris *Arc_de_Triomphe|Paris Notre-Dame_Cathedral|Paris
        *Musée_d'Orsay|Paris *Sacré-Cœur_Basilica|Paris *Champs-Élysées|Paris *Colosseum|Rome
        *Trevi_Fountain|Rome *Pantheon|Rome *Roman_Forum|Rome Big_Ben|London
        Buckingham_Palace|London *Westminster_Abbey|London Trafalgar_Square|London *British_Museum|London
        St_Paul's_Cathedral|London Hyde_Park|London *Brandenburg_Gate|Berlin *Reichstag_building|Berlin
        Checkpoint_Charlie|Berlin Alexanderplatz|Berlin *Prado_Museum|Madrid Puerta_del_Sol|Madrid
        *Santiago_Bernabéu_Stadium|Madrid *Kremlin|Moscow Red_Square|Moscow St._Basil's_Cathedral|Moscow
        *Bolshoi_Theatre|Moscow *Acropolis|Athens *Parthenon|Athens *Forbidden_City|Beijing
        Tiananmen_Square|Beijing *Temple_of_Heaven|Beijing *Summer_Palace|Beijing Shibuya_Crossing|Tokyo
        Senso-ji_Temple|Tokyo *Meiji_Shrine|Tokyo *Belém_Tower|Lisbon Schönbrunn_Palace|Vienna
        St._Stephen's_Cathedral|Vienna *Hofburg_Palace|Vienna *Guinness_Storehouse|Dublin *Vasa_Museum|Stockholm
        Tivoli_Gardens|Copenhagen Nyhavn|Copenhagen *Little_Mermaid_statue|Copenhagen
        *Hungarian_Parliament_Building|Budapest Buda_Castle|Budapest *Rijksmuseum|Amsterdam
        *Anne_Frank_House|Amsterdam *Van_Gogh_Museum|Amsterdam *Atomium|Brussels Manneken_Pis|Brussels
        *Grand_Place|Brussels *Grand_Palace|Bangkok Wat_Arun|Bangkok Gyeongbokgung_Palace|Seoul
        *Casa_Rosada|Buenos_Aires *Teatro_Colón|Buenos_Aires *Zócalo|Mexico_City Chapultepec_Castle|Mexico_City
        Parliament_Hill|Ottawa *Rideau_Canal|Ottawa *India_Gate|New_Delhi *Lotus_Temple|New_Delhi
        *Egyptian_Museum|Cairo Khan_el-Khalili|Cairo *Charles_Bridge|Prague St._Vitus_Cathedral|Prague
        *Palace_of_Culture_and_Science|Warsaw *Sagrada_Familia|Barcelona Park_Güell|Barcelona
        Camp_Nou|Barcelona *Statue_of_Liberty|New_York *Empire_State_Building|New_York Central_Park|New_York
        Times_Square|New_York *Brooklyn_Bridge|New_York Wall_Street|New_York Rockefeller_Center|New_York
        *Metropolitan_Museum_of_Art|New_York *Golden_Gate_Bridge|San_Francisco Alcatraz_Island|San_Francisco
        *Space_Needle|Seattle Bondi_Beach|Sydney *White_House|Washington
        *Lincoln_Memorial|Washington *Burj_Khalifa|Dubai Hagia_Sophia|Istanbul
        *Grand_Bazaar|Istanbul Topkapi_Palace|Istanbul *Galata_Tower|Istanbul *Rialto_Bridge|Venice
        St._Mark's_Basilica|Venice *Doge's_Palace|Venice *Ponte_Vecchio|Florence *Uffizi_Gallery|Florence
        *CN_Tower|Toronto *Gateway_of_India|Mumbai *Alhambra|Granada *Hollywood_Sign|Los_Angeles
        Griffith_Observatory|Los_Angeles *Willis_Tower|Chicago *Christ_the_Redeemer_statue|Rio_de_Janeiro
        Copacabana_Beach|Rio_de_Janeiro Sugarloaf_Mountain|Rio_de_Janeiro *Hermitage_Museum|Saint_Petersburg""",
    ),
    (
        "city_country",
        "{} is a city in the country of",
        ["The city of {} is located in the country of", "{} is located in the country of", "The city of {} lies in"],
        ["The city of {} is", "Life in {} is"],
        """Toronto|Canada Vancouver|Canada Montreal|Canada Calgary|Canada Munich|Germany Hamburg|Germany
        Frankfurt|Germany Cologne|Germany Stuttgart|Germany Dresden|Germany Leipzig|Germany Barcelona|Spain
        Seville|Spain Valencia|Spain Bilbao|Spain Malaga|Spain Milan|Italy Naples|Italy Florence|Italy
        Venice|Italy Turin|Italy Bologna|Italy Verona|Italy Palermo|Italy Osaka|Japan Kyoto|Japan
        Yokohama|Japan Nagoya|Japan Sapporo|Japan Hiroshima|Japan Sydney|Australia Melbourne|Australia
        Brisbane|Australia Adelaide|Australia Mumbai|India Bangalore|India Kolkata|India Chennai|India
        Hyderabad|India Jaipur|India Shanghai|China Shenzhen|China Guangzhou|China Wuhan|China Chengdu|China
        Nanjing|China Istanbul|Turkey Izmir|Turkey Rio_de_Janeiro|Brazil São_Paulo|Brazil Recife|Brazil
        Marseille|France Lyon|France Nice|France Bordeaux|France Toulouse|France Strasbourg|France
        Porto|Portugal Kraków|Poland Gdansk|Poland Salzburg|Austria Geneva|Switzerland Zurich|Switzerland
        Chicago|the_United_States Houston|the_United_States Boston|the_United_States
        San_Francisco|the_United_States Seattle|the_United_States Miami|the_United_States
        Philadelphia|the_United_States Las_Vegas|the_United_States Manchester|England Liverpool|England
        Glasgow|Scotland Saint_Petersburg|Russia Novosibirsk|Russia Kazan|Russia Casablanca|Morocco
        Marrakesh|Morocco Cape_Town|South_Africa Johannesburg|South_Africa Busan|South_Korea Karachi|Pakistan
        Lahore|Pakistan Auckland|New_Zealand Rotterdam|the_Netherlands Antwerp|Belgium Gothenburg|Sweden
        Bergen|Norway Guadalajara|Mexico Monterrey|Mexico Cancun|Mexico Medellin|Colombia
        Rosario|Argentina""",
    ),
    (
        "landmark_country",
        "{T}{} is located in the country of",
        ["{T}{} can be found in", "{T}{} is a famous landmark in", "Visitors to {t}{} travel to the country of"],
        ["{T}{} is", "The view from {t}{}"],
        """Mount_Fuji|Japan Machu_Picchu|Peru *Taj_Mahal|India *Great_Wall|China Stonehenge|England
        Angkor_Wat|Cambodia Petra|Jordan *Great_Pyramid_of_Giza|Egypt Mount_Kilimanjaro|Tanzania
        Uluru|Australia Chichen_Itza|Mexico Neuschwanstein_Castle|Germany *Sphinx|Egypt
        *Great_Barrier_Reef|Australia Loch_Ness|Scotland Table_Mountain|South_Africa *Blue_Mosque|Turkey
        Lake_Baikal|Russia Mont_Saint-Michel|France Pompeii|Italy Versailles|France
        Yosemite|the_United_States *Grand_Canyon|the_United_States Mount_Rushmore|the_United_States
        Ha_Long_Bay|Vietnam Bali|Indonesia *Amazon_rainforest|Brazil Cappadocia|Turkey *Valley_of_the_Kings|Egypt
        *Black_Forest|Germany Geirangerfjord|Norway""",
    ),
    (
        "official_language",
        "The official language of {t}{} is",
        [
            "{T}{}'s official language is",
            "In {t}{}, the official language is",
            "The language spoken officially in {t}{} is",
        ],
        ["People in {t}{} speak", "The culture of {t}{}"],
        """France|French Germany|German Italy|Italian Spain|Spanish Mexico|Spanish Argentina|Spanish
        Colombia|Spanish Chile|Spanish Peru|Spanish Brazil|Portuguese Portugal|Portuguese Japan|Japanese
        Russia|Russian Greece|Greek *Netherlands|Dutch Sweden|Swedish Norway|Norwegian Finland|Finnish
        Poland|Polish Turkey|Turkish Egypt|Arabic Saudi_Arabia|Arabic Iraq|Arabic Morocco|Arabic Iran|Persian
        Israel|Hebrew South_Korea|Korean Thailand|Thai Vietnam|Vietnamese Hungary|Hungarian Austria|German
        Denmark|Danish Indonesia|Indonesian Ukraine|Ukrainian Romania|Romanian Czechia|Czech
        Cuba|Spanish Venezuela|Spanish Syria|Arabic Jordan|Arabic Mozambique|Portuguese Angola|Portuguese
        Bulgaria|Bulgarian Croatia|Croatian *United_Kingdom|English Australia|English New_Zealand|English
        Jamaica|English Uruguay|Spanish Bolivia|Spanish Ecuador|Spanish Lebanon|Arabic Libya|Arabic
        Serbia|Serbian Slovakia|Slovak Lithuania|Lithuanian Latvia|Latvian Estonia|Estonian Iceland|Icelandic""",
    ),
    (
        "native_language",
        "The mother tongue of {} is",
        ["{}'s mother tongue is", "The native language of {} is", "{} grew up speaking"],
        ["{} was", "{} is best known for"],
        """Victor_Hugo|French Emmanuel_Macron|French Jean-Paul_Sartre|French Albert_Camus|French
        Edith_Piaf|French Charles_de_Gaulle|French Jules_Verne|French Voltaire|French Claude_Monet|French
        Louis_Pasteur|French Gustave_Eiffel|French Angela_Merkel|German Johann_Wolfgang_von_Goethe|German
        Thomas_Mann|German Otto_von_Bismarck|German Ludwig_van_Beethoven|German Johann_Sebastian_Bach|German
        Albert_Einstein|German Friedrich_Nietzsche|German Immanuel_Kant|German Martin_Luther|German
        Vladimir_Putin|Russian Leo_Tolstoy|Russian Fyodor_Dostoevsky|Russian Anton_Chekhov|Russian
        Alexander_Pushkin|Russian Mikhail_Gorbachev|Russian Yuri_Gagarin|Russian Boris_Yeltsin|Russian
        Miguel_de_Cervantes|Spanish Pablo_Neruda|Spanish Gabriel_García_Márquez|Spanish Antonio_Banderas|Spanish
        Penélope_Cruz|Spanish Pablo_Picasso|Spanish Fidel_Castro|Spanish Frida_Kahlo|Spanish
        Jorge_Luis_Borges|Spanish Dante_Alighieri|Italian Silvio_Berlusconi|Italian Federico_Fellini|Italian
        Sophia_Loren|Italian Luciano_Pavarotti|Italian Galileo_Galilei|Italian Giuseppe_Verdi|Italian
        Andrea_Bocelli|Italian Akira_Kurosawa|Japanese Haruki_Murakami|Japanese Hayao_Miyazaki|Japanese
        Yukio_Mishima|Japanese Shinzo_Abe|Japanese William_Shakespeare|English Charles_Dickens|English
        Winston_Churchill|English Jane_Austen|English Isaac_Newton|English Charles_Darwin|English
        Margaret_Thatcher|English Agatha_Christie|English Frédéric_Chopin|Polish Lech_Wałęsa|Polish
        Marie_Curie|Polish Pope_John_Paul_II|Polish Ingmar_Bergman|Swedish Greta_Garbo|Swedish
        Alfred_Nobel|Swedish Björn_Borg|Swedish Mao_Zedong|Chinese Confucius|Chinese Xi_Jinping|Chinese
        Pelé|Portuguese Fernando_Pessoa|Portuguese José_Saramago|Portuguese Vasco_da_Gama|Portuguese
        Rembrandt|Dutch Vincent_van_Gogh|Dutch Johan_Cruyff|Dutch Homer|Greek Socrates|Greek
        Aristotle|Greek Plato|Greek""",
    ),
    (
        "continent",
        "{T}{} is located in the continent of",
        [
            "{T}{} is a country in the continent of",
            "{T}{} is part of the continent of",
            "{T}{} belongs to the continent of",
        ],
        ["{T}{} is a country", "The people of {t}{}"],
        """Kenya|Africa Nigeria|Africa Ghana|Africa Ethiopia|Africa Tanzania|Africa Uganda|Africa
        Senegal|Africa Zambia|Africa Zimbabwe|Africa Cameroon|Africa Mali|Africa Somalia|Africa Sudan|Africa
        Angola|Africa Mozambique|Africa Namibia|Africa Botswana|Africa Rwanda|Africa Algeria|Africa
        Tunisia|Africa Madagascar|Africa Morocco|Africa
        Brazil|South_America Argentina|South_America Peru|South_America Chile|South_America
        Bolivia|South_America Uruguay|South_America Paraguay|South_America Ecuador|South_America
        Venezuela|South_America Colombia|South_America Guyana|South_America Suriname|South_America
        Japan|Asia China|Asia India|Asia Vietnam|Asia Thailand|Asia Mongolia|Asia Nepal|Asia Cambodia|Asia
        Laos|Asia Uzbekistan|Asia Malaysia|Asia *Philippines|Asia Pakistan|Asia Bangladesh|Asia
        Sri_Lanka|Asia Myanmar|Asia Bhutan|Asia Afghanistan|Asia Iran|Asia Iraq|Asia Saudi_Arabia|Asia
        South_Korea|Asia North_Korea|Asia Germany|Europe France|Europe Italy|Europe Spain|Europe
        Poland|Europe Sweden|Europe Norway|Europe Portugal|Europe Belgium|Europe Austria|Europe
        Hungary|Europe Slovakia|Europe Lithuania|Europe Finland|Europe Denmark|Europe Ireland|Europe
        Greece|Europe *Netherlands|Europe Switzerland|Europe Czechia|Europe Romania|Europe Bulgaria|Europe
        Croatia|Europe Serbia|Europe Latvia|Europe Estonia|Europe Slovenia|Europe Canada|North_America
        Mexico|North_America Cuba|North_America *United_States|North_America""",
    ),
    (
        "device_maker",
        "{T}{} is a device made by",
        ["{T}{} was released by", "{T}{} is produced by", "The company that makes {t}{} is"],
        ["{T}{} is", "People buy {t}{} because"],
        """*iPhone|Apple *iPad|Apple *MacBook|Apple *iPod|Apple *iMac|Apple *Macintosh|Apple *Xbox|Microsoft
        *Surface_Pro|Microsoft *Zune|Microsoft *PlayStation|Sony *Walkman|Sony *Discman|Sony *Kindle|Amazon
        *ThinkPad|Lenovo *Wii|Nintendo *Game_Boy|Nintendo *GameCube|Nintendo *Galaxy_S|Samsung
        *Pixel_phone|Google *Echo_smart_speaker|Amazon *Xbox_360|Microsoft *PlayStation_Portable|Sony""",
    ),
    (
        "headquarters",
        "The headquarters of {t}{} are in",
        ["{T}{} is headquartered in", "{T}{}'s headquarters are located in", "The main office of {t}{} is in"],
        ["{T}{} is an organisation that", "The history of {t}{}"],
        """Apple|Cupertino Microsoft|Redmond Google|Mountain_View Amazon|Seattle Starbucks|Seattle Sony|Tokyo
        Toshiba|Tokyo Nintendo|Kyoto Samsung|Seoul Volkswagen|Wolfsburg BMW|Munich Siemens|Munich
        Allianz|Munich Mercedes-Benz|Stuttgart Porsche|Stuttgart Ferrari|Maranello Fiat|Turin Nestlé|Vevey
        Coca-Cola|Atlanta Nike|Beaverton Walmart|Bentonville Ford|Dearborn General_Motors|Detroit
        Intel|Santa_Clara Netflix|Los_Gatos Airbus|Toulouse Philips|Amsterdam Heineken|Amsterdam *BBC|London
        HSBC|London BP|London Goldman_Sachs|New_York JPMorgan_Chase|New_York Pfizer|New_York Alibaba|Hangzhou
        Huawei|Shenzhen Tencent|Shenzhen Baidu|Beijing Ericsson|Stockholm Spotify|Stockholm Volvo|Gothenburg
        Adidas|Herzogenaurach Novartis|Basel Roche|Basel UNESCO|Paris NATO|Brussels FIFA|Zurich
        *Red_Cross|Geneva *United_Nations|New_York Hyundai|Seoul LG|Seoul""",
    ),
    (
        "sport",
        "{} is a professional",
        ["{} made a career as a professional", "{} earns a living as a professional", "{} is known as a professional"],
        ["{} is best known for", "Last season, {}"],
        """Lionel_Messi|soccer Cristiano_Ronaldo|soccer Pelé|soccer Diego_Maradona|soccer
        Zinedine_Zidane|soccer David_Beckham|soccer Neymar|soccer Kylian_Mbappé|soccer Wayne_Rooney|soccer
        Michael_Jordan|basketball LeBron_James|basketball Kobe_Bryant|basketball Shaquille_O'Neal|basketball
        Stephen_Curry|basketball Magic_Johnson|basketball Larry_Bird|basketball Kevin_Durant|basketball
        Roger_Federer|tennis Serena_Williams|tennis Rafael_Nadal|tennis Novak_Djokovic|tennis
        Andy_Murray|tennis Maria_Sharapova|tennis Venus_Williams|tennis Pete_Sampras|tennis
        Tiger_Woods|golfer Jack_Nicklaus|golfer Phil_Mickelson|golfer Rory_McIlroy|golfer Arnold_Palmer|golfer
        Babe_Ruth|baseball Derek_Jeter|baseball Jackie_Robinson|baseball Wayne_Gretzky|hockey
        Sidney_Crosby|hockey Alexander_Ovechkin|hockey Sachin_Tendulkar|cricketer Virat_Kohli|cricketer
        Muhammad_Ali|boxer Mike_Tyson|boxer Floyd_Mayweather|boxer Manny_Pacquiao|boxer""",
    ),
    (
        "instrument",
        "{} is known for playing the",
        ["{} is famous for playing the", "{}'s instrument is the", "{} became famous playing the"],
        ["{} is", "The music of {}"],
        """Jimi_Hendrix|guitar Eric_Clapton|guitar B.B._King|guitar Jimmy_Page|guitar Carlos_Santana|guitar
        Eddie_Van_Halen|guitar Stevie_Ray_Vaughan|guitar Keith_Richards|guitar Slash|guitar Franz_Liszt|piano
        Frédéric_Chopin|piano Elton_John|piano Billy_Joel|piano Lang_Lang|piano Vladimir_Horowitz|piano
        Glenn_Gould|piano Ray_Charles|piano Alicia_Keys|piano Yo-Yo_Ma|cello Pablo_Casals|cello
        Mstislav_Rostropovich|cello Itzhak_Perlman|violin Niccolò_Paganini|violin Jascha_Heifetz|violin
        Joshua_Bell|violin Louis_Armstrong|trumpet Miles_Davis|trumpet Dizzy_Gillespie|trumpet
        Chet_Baker|trumpet John_Coltrane|saxophone Charlie_Parker|saxophone Kenny_G|saxophone
        Sonny_Rollins|saxophone Ringo_Starr|drums John_Bonham|drums Keith_Moon|drums Neil_Peart|drums
        Ravi_Shankar|sitar""",
    ),
    (
        "author",
        "The book {} was written by",
        ["{} was written by", "{} is a famous book by", "The author of {} is"],
        ["{} is", "The story of {}"],
        """Hamlet|William_Shakespeare Macbeth|William_Shakespeare Romeo_and_Juliet|William_Shakespeare
        Othello|William_Shakespeare King_Lear|William_Shakespeare War_and_Peace|Leo_Tolstoy
        Anna_Karenina|Leo_Tolstoy Crime_and_Punishment|Fyodor_Dostoevsky The_Brothers_Karamazov|Fyodor_Dostoevsky
        Pride_and_Prejudice|Jane_Austen Sense_and_Sensibility|Jane_Austen Oliver_Twist|Charles_Dickens
        A_Christmas_Carol|Charles_Dickens Great_Expectations|Charles_Dickens David_Copperfield|Charles_Dickens
        A_Tale_of_Two_Cities|Charles_Dickens Nineteen_Eighty-Four|George_Orwell Animal_Farm|George_Orwell
        The_Hobbit|J._R._R._Tolkien The_Lord_of_the_Rings|J._R._R._Tolkien Don_Quixote|Miguel_de_Cervantes
        Les_Misérables|Victor_Hugo The_Hunchback_of_Notre-Dame|Victor_Hugo The_Great_Gatsby|F._Scott_Fitzgerald
        Moby-Dick|Herman_Melville The_Odyssey|Homer The_Iliad|Homer Adventures_of_Huckleberry_Finn|Mark_Twain
        The_Adventures_of_Tom_Sawyer|Mark_Twain Frankenstein|Mary_Shelley Dracula|Bram_Stoker
        The_Old_Man_and_the_Sea|Ernest_Hemingway One_Hundred_Years_of_Solitude|Gabriel_García_Márquez
        The_Divine_Comedy|Dante_Alighieri Faust|Johann_Wolfgang_von_Goethe Ulysses|James_Joyce
        The_Catcher_in_the_Rye|J._D._Salinger To_Kill_a_Mockingbird|Harper_Lee Brave_New_World|Aldous_Huxley
        On_the_Origin_of_Species|Charles_Darwin The_Hound_of_the_Baskervilles|Arthur_Conan_Doyle
        Alice's_Adventures_in_Wonderland|Lewis_Carroll Treasure_Island|Robert_Louis_Stevenson
        Robinson_Crusoe|Daniel_Defoe Gulliver's_Travels|Jonathan_Swift The_Raven|Edgar_Allan_Poe
        The_Art_of_War|Sun_Tzu The_Little_Prince|Antoine_de_Saint-Exupéry The_Da_Vinci_Code|Dan_Brown
        The_Shining|Stephen_King Harry_Potter_and_the_Philosopher's_Stone|J._K._Rowling
        Murder_on_the_Orient_Express|Agatha_Christie Emma|Jane_Austen Twenty_Thousand_Leagues_Under_the_Seas|Jules_Verne
        Around_the_World_in_Eighty_Days|Jules_Verne The_Time_Machine|H._G._Wells The_War_of_the_Worlds|H._G._Wells
        The_Call_of_the_Wild|Jack_London A_Farewell_to_Arms|Ernest_Hemingway""",
    ),
    (
        "painter",
        "{T}{} is a famous painting by",
        ["{T}{} was painted by", "The painter of {t}{} is", "The artist who painted {t}{} is"],
        ["{T}{} is", "Visitors looking at {t}{}"],
        """*Mona_Lisa|Leonardo_da_Vinci *Last_Supper|Leonardo_da_Vinci Lady_with_an_Ermine|Leonardo_da_Vinci
        *Starry_Night|Vincent_van_Gogh Sunflowers|Vincent_van_Gogh *Potato_Eaters|Vincent_van_Gogh
        Café_Terrace_at_Night|Vincent_van_Gogh Guernica|Pablo_Picasso *Old_Guitarist|Pablo_Picasso
        Les_Demoiselles_d'Avignon|Pablo_Picasso *Scream|Edvard_Munch *Persistence_of_Memory|Salvador_Dalí
        *Birth_of_Venus|Sandro_Botticelli Primavera|Sandro_Botticelli *Night_Watch|Rembrandt
        *Anatomy_Lesson_of_Dr._Nicolaes_Tulp|Rembrandt Girl_with_a_Pearl_Earring|Johannes_Vermeer
        *Milkmaid|Johannes_Vermeer Water_Lilies|Claude_Monet Impression,_Sunrise|Claude_Monet
        Woman_with_a_Parasol|Claude_Monet *Sistine_Chapel_ceiling|Michelangelo *Creation_of_Adam|Michelangelo
        *Last_Judgment|Michelangelo *Kiss|Gustav_Klimt American_Gothic|Grant_Wood
        *Great_Wave_off_Kanagawa|Hokusai""",
    ),
    (
        "composer",
        "{T}{} was composed by",
        ["{T}{} is a famous piece by", "The composer of {t}{} is", "The music of {t}{} was written by"],
        ["{T}{} is", "Listening to {t}{}"],
        """*Magic_Flute|Wolfgang_Amadeus_Mozart *Marriage_of_Figaro|Wolfgang_Amadeus_Mozart
        Don_Giovanni|Wolfgang_Amadeus_Mozart Eine_kleine_Nachtmusik|Wolfgang_Amadeus_Mozart
        *Four_Seasons|Antonio_Vivaldi Swan_Lake|Pyotr_Ilyich_Tchaikovsky *Nutcracker|Pyotr_Ilyich_Tchaikovsky
        Für_Elise|Ludwig_van_Beethoven *Moonlight_Sonata|Ludwig_van_Beethoven *Ode_to_Joy|Ludwig_van_Beethoven
        Carmen|Georges_Bizet Aida|Giuseppe_Verdi La_Traviata|Giuseppe_Verdi Madama_Butterfly|Giacomo_Puccini
        La_Bohème|Giacomo_Puccini *Blue_Danube|Johann_Strauss Boléro|Maurice_Ravel Clair_de_Lune|Claude_Debussy
        *Planets|Gustav_Holst *Toccata_and_Fugue_in_D_minor|Johann_Sebastian_Bach *Messiah|George_Frideric_Handel
        *Rite_of_Spring|Igor_Stravinsky Rhapsody_in_Blue|George_Gershwin""",
    ),
    (
        "currency",
        "The currency of {t}{} is the",
        ["The official currency of {t}{} is the", "{T}{}'s currency is the", "In {t}{}, people pay with the"],
        ["The economy of {t}{}", "Prices in {t}{}"],
        """Japan|yen *United_Kingdom|pound India|rupee Russia|ruble China|yuan Mexico|peso Brazil|real
        Switzerland|franc South_Korea|won Germany|Euro France|Euro Italy|Euro Spain|Euro Portugal|Euro
        Greece|Euro Ireland|Euro Austria|Euro Finland|Euro *Netherlands|Euro Belgium|Euro Poland|zloty
        Sweden|krona Turkey|lira *United_States|dollar Canada|dollar Australia|dollar New_Zealand|dollar
        Thailand|baht Vietnam|dong Israel|shekel South_Africa|rand Egypt|pound Argentina|peso Chile|peso
        Colombia|peso Indonesia|rupiah Pakistan|rupee Denmark|krone Norway|krone Hungary|forint
        Czechia|koruna Saudi_Arabia|riyal Nigeria|naira Ukraine|hryvnia *Philippines|peso Malaysia|ringgit
        Bangladesh|taka Iran|rial""",
    ),
    (
        "city_currency",
        "The currency used in {} is the",
        ["In {}, shops take payment in the", "People in {} pay with the", "Visitors to {} pay with the"],
        ["Shopping in {}", "The markets of {}"],
        """Tokyo|yen Osaka|yen Kyoto|yen London|pound Manchester|pound Edinburgh|pound Mumbai|rupee
        Delhi|rupee Bangalore|rupee Moscow|ruble Saint_Petersburg|ruble Beijing|yuan Shanghai|yuan
        Mexico_City|peso Guadalajara|peso Zurich|franc Geneva|franc Seoul|won Busan|won Paris|Euro
        Berlin|Euro Rome|Euro Madrid|Euro Vienna|Euro Lisbon|Euro New_York|dollar Chicago|dollar Toronto|dollar
        Sydney|dollar Istanbul|lira Stockholm|krona Warsaw|zloty Bangkok|baht Cape_Town|rand
        Rio_de_Janeiro|real São_Paulo|real Buenos_Aires|peso Tel_Aviv|shekel Cairo|pound Jakarta|rupiah
        Oslo|krone Copenhagen|krone Budapest|forint Prague|koruna Hanoi|dong Riyadh|riyal Lagos|naira
        Kyiv|hryvnia Manila|peso Kuala_Lumpur|ringgit Dhaka|taka Tehran|rial Karachi|rupee""",
    ),
]

PREFIXES = """The weather was cold that morning. | She forgot her umbrella at the station. | Our dog likes to sleep
in the sun. | The meeting was moved to Thursday. | He bought fresh bread on the way home. | The kettle
started to whistle. | It rained all afternoon. | The children built a sand castle. | My neighbour plays chess
every evening. | The train was ten minutes late. | A cat was sitting on the wall. | They painted the kitchen
green. | The soup needed more salt. | We counted the stars last night. | The printer ran out of paper. |
Her bicycle has a flat tyre. | The garden is full of tomatoes. | He lost his keys again. | The shop closes
at six. | A bird flew into the window. | The film lasted three hours. | I wrote a letter to my aunt. |
The lift is out of order. | The river froze last winter. | We had pancakes for breakfast. | The bus
stopped near the bakery. | Someone left the door open. | The candle burned all night. | He fixed the old
clock. | The library was very quiet.""".replace("\n", " ")


def _name(s: str) -> str:
    return s.replace("_", " ")


def _fill(template: str, article: bool) -> str:
    return template.replace("{T}", "The " if article else "").replace("{t}", "the " if article else "")


def main(seed: int = 0) -> None:
    rng = random.Random(seed)
    prefixes = [p.strip() for p in PREFIXES.split("|")]
    facts = []  # (relation, subject, article, object)
    for rel, _, _, _, table in RELATIONS:
        for item in table.split():
            subj, obj = item.split("|")
            facts.append((rel, _name(subj.lstrip("*")), subj.startswith("*"), _name(obj)))
    templates = {r[0]: r[1:4] for r in RELATIONS}

    def main_text(f: tuple) -> str:
        return _fill(templates[f[0]][0], f[2]).replace("{}", f[1])

    rows = []
    for k, f in enumerate(facts):
        rel, subj, art, obj = f
        prompt, paras, gens = templates[rel]
        pool = sorted({o for r, _, _, o in facts if r == rel and o != obj})
        # never an object that extends the true one or that it extends (as text; the check script tests tokens)
        pool = [o for o in pool if not o.startswith(obj) and not obj.startswith(o)]
        new = rng.choice(pool)
        neigh = [main_text(g) for g in facts if g[3] == obj and g[1] != subj and g[1] not in main_text(f)]
        # not naming the subject, and not giving the answer away
        neigh = [
            n for n in dict.fromkeys(neigh) if subj not in n and not re.search(rf"(?<!\w){re.escape(obj)}(?!\w)", n)
        ]
        rng.shuffle(neigh)
        row = {
            "id": f"{rel}-{k:03d}",
            "prompt": _fill(prompt, art),
            "subject": subj,
            "target_new": new,
            "target_true": obj,
            "paraphrases": [
                _fill(paras[0], art).replace("{}", subj),
                _fill(paras[1], art).replace("{}", subj),
                rng.choice(prefixes) + " " + _fill(paras[2], art).replace("{}", subj),
            ],
            "neighborhood": neigh[:10],
            "generation": [_fill(g, art).replace("{}", subj) for g in gens],
        }
        rows.append(row)
    out = HERE / "edits" / "candidates.jsonl"
    with open(out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{out}: {len(rows)} candidates over {len(RELATIONS)} relations")


if __name__ == "__main__":
    main()
